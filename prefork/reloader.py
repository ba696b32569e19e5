# --reload: the master watches the application's source files and, when one
# changes, starts a new generation of workers through the HUP path (the new
# workers are ready before the old ones are retired, and a generation that
# fails to import is abandoned while the old one keeps serving).
#
# The master never imports the application, so it cannot know its modules by
# itself: each worker, once it has loaded the application (or failed to),
# writes the list of the source files it imported into a private directory
# the master made (``Worker.app_files_report``), and the master watches the
# union of those lists and the --reload-extra-file files. What is watched is
# what the application really imports — its own packages and the ones it uses
# from site-packages, but neither the standard library nor prefork — rather
# than a directory tree, which may hold a virtualenv or node_modules.
#
# Neither engine ever blocks the master's loop:
# * poll: the master stats the files itself, at most STAT_BATCH per turn of
#   its loop, a full round every POLL_INTERVAL;
# * inotify: watchfiles waits for the kernel's events in a thread that only
#   queues the changed paths and writes a byte to a pipe in the master's wait.
#   It watches the files' directories, not the files (an editor that saves by
#   renaming replaces the file's inode), and keeps the events of watched files.
from __future__ import annotations

import collections
import fcntl
import os
import shutil
import signal
import tempfile
import threading
from typing import Any

from .logs import Logger
from .settings import Config, ConfigError, watchfiles_installed

POLL_INTERVAL = 0.5  # seconds between two rounds of the poll engine
REPORT_INTERVAL = 0.25  # how often the master reads the lists the workers wrote
STAT_BATCH = 256  # files stat()ed in one turn of the master's loop
BATCH_PAUSE = 0.01  # between two batches of one round
WATCH_STEP_MS = 50  # watchfiles: a change is reported after this long without another
WATCH_DEBOUNCE_MS = 400  # ... or after this long in all

Signature = tuple[int, int, int] | None  # mtime, size, inode; None when missing


def check_settings(cfg: Config) -> None:
    """One-line ``ConfigError`` for --reload combined with what defeats it;
    warnings for the reload settings that do nothing without it."""
    if not cfg.reload:
        for name in ("reload_engine", "reload_extra_files"):
            if cfg.sources.get(name, "default") != "default":
                cfg.warnings.append(f"{cfg.where(name)} has no effect without --reload")
        return
    if cfg.preload_app:
        raise ConfigError(f"{cfg.where('reload')} cannot be combined with "
                          f"{cfg.where('preload_app')}: the master would keep the application's "
                          "old code and hand it to every new worker; drop --preload while "
                          "developing")


def engine_for(name: str) -> str:
    """The engine ``auto`` stands for here: inotify when watchfiles imports."""
    if name == "auto":
        return "inotify" if watchfiles_installed() else "poll"
    return name


def signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def parse_report_line(line: str) -> tuple[str, Signature] | None:
    """A worker's ``MTIME_NS SIZE INODE PATH`` (``- - - PATH`` for a missing
    file); None for a line that is neither."""
    fields = line.split(" ", 3)
    if len(fields) != 4 or not fields[3]:
        return None
    mtime, size, inode, path = fields
    if mtime == "-":
        return path, None
    try:
        return path, (int(mtime), int(size), int(inode))
    except ValueError:
        return None


class Reloader:
    """What the master watches for --reload; inert when it is off."""

    def __init__(self, cfg: Config, log: Logger) -> None:
        self.log = log
        self.enabled = bool(cfg.reload)
        self.engine = engine_for(cfg.reload_engine) if self.enabled else ""
        self.extra = [os.path.abspath(p) for p in cfg.reload_extra_files]
        self.owner = (-1 if cfg.user is None else cfg.user, -1 if cfg.group is None else cfg.group)
        self.report_dir = ""
        self.files: dict[str, Signature] = {}
        self.changed: list[str] = []
        self._order: list[str] = []  # the poll round's files
        self._position = 0  # the next file of the round
        self._round_at = 0.0
        self._step_at = 0.0
        self._report_at = 0.0
        self._watcher: Watcher | None = None

    def start(self) -> None:
        """After any daemonizing fork: the watcher thread must be the master's."""
        if not self.enabled:
            return
        self.report_dir = tempfile.mkdtemp(prefix="prefork-reload-")
        if self.owner != (-1, -1):
            os.chown(self.report_dir, *self.owner)  # the workers write there after dropping root
        if self.engine == "inotify":
            self._watcher = Watcher()
            self._watcher.start()
        self._add({path: signature(path) for path in self.extra})
        self.log.info("Reload: watching the application's source files for changes (%s)",
                      self.engine)

    def report_path(self, age: int) -> str | None:
        """Where the worker of this age lists the files it imported."""
        return os.path.join(self.report_dir, str(age)) if self.enabled else None

    def fds(self) -> list[int]:
        return [self._watcher.read_fd] if self._watcher is not None else []

    def next_check(self, now: float) -> float:
        """When the loop should come back for us; 0.0 when never."""
        if not self.enabled:
            return 0.0
        due = [self._report_at]
        if self._watcher is None:
            due.append(self._step_at if self._position else self._round_at)
        return max(min(due), now + 0.001)

    def step(self, now: float) -> None:
        """Take in the workers' lists and the changes seen since the last step."""
        if not self.enabled:
            return
        if self._watcher is not None:
            self._take_events()
        if now >= self._report_at:
            self._report_at = now + REPORT_INTERVAL
            self._read_reports()
        if self._watcher is None and now >= (self._step_at if self._position else self._round_at):
            self._poll(now)

    def take_changes(self) -> list[str]:
        changed, self.changed = self.changed, []
        return changed

    def _add(self, seen: dict[str, Signature]) -> None:
        """Watch these files too, as they were when ``seen``: a change since is one."""
        new = {path: sig for path, sig in seen.items() if path not in self.files}
        if not new:
            return
        self.files.update(new)
        if self._watcher is not None:
            self._watcher.watch(self.files)
            self.changed += [p for p, sig in new.items() if signature(p) != sig
                             and p not in self.changed]

    def _read_reports(self) -> None:
        try:
            entries = [e.path for e in os.scandir(self.report_dir) if not e.name.endswith(".part")]
        except OSError:
            return
        for path in entries:
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    listed = f.read().splitlines()
                os.unlink(path)
            except OSError:
                continue
            self._add(dict(filter(None, map(parse_report_line, listed))))

    def _poll(self, now: float) -> None:
        if not self._position:
            self._order = sorted(self.files)
            self._round_at = now + POLL_INTERVAL
        batch = self._order[self._position:self._position + STAT_BATCH]
        for path in batch:
            seen = signature(path)
            if seen != self.files.get(path):
                self.files[path] = seen
                self.changed.append(path)
        self._position += len(batch)
        if self._position >= len(self._order):
            self._position = 0
        self._step_at = now + BATCH_PAUSE

    def _take_events(self) -> None:
        watcher = self._watcher
        assert watcher is not None
        watcher.drain()
        while watcher.events:
            path = watcher.events.popleft()
            if path not in self.changed:
                self.changed.append(path)
        if watcher.failure:
            self.log.error("Reload: the inotify engine failed (%s); polling instead",
                           watcher.failure)
            watcher.close()
            self._watcher = None
            self.engine = "poll"
            self._position = 0
            self._round_at = 0.0

    def close(self) -> None:
        """The master's last step: stop the thread, remove the directory."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self.report_dir:
            shutil.rmtree(self.report_dir, ignore_errors=True)
            self.report_dir = ""

    def close_in_child(self) -> None:
        """In a new worker: drop the master's end of the watcher's pipe."""
        if self._watcher is not None:
            self._watcher.close_fds()


class Watcher:
    """watchfiles in a thread that only queues paths and wakes the master."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        for fd in (self.read_fd, self._write_fd):
            os.set_blocking(fd, False)
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self.events: collections.deque[str] = collections.deque()
        self.failure = ""
        self._files: frozenset[str] = frozenset()
        self._restart = threading.Event()  # the set of directories changed
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The master's signals must reach the main thread's wait, never this one.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread = threading.Thread(target=self._run, name="prefork-reload", daemon=True)
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def watch(self, files: dict[str, Any]) -> None:
        old_dirs = _dirs(self._files)
        self._files = frozenset(files)
        if _dirs(self._files) != old_dirs:
            self._restart.set()

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def _run(self) -> None:
        import watchfiles

        while not self._closing:
            self._restart.clear()
            dirs = sorted(d for d in _dirs(self._files) if os.path.isdir(d))
            if not dirs:
                self._restart.wait()
                continue
            try:
                for changes in watchfiles.watch(
                        *dirs, watch_filter=self._wanted, stop_event=self._restart,
                        debounce=WATCH_DEBOUNCE_MS, step=WATCH_STEP_MS, recursive=False,
                        raise_interrupt=False, ignore_permission_denied=True):
                    self.events.extend(path for _, path in changes)
                    self._wake()
            except Exception as exc:  # e.g. the inotify watch limit: the master falls back
                self.failure = f"{type(exc).__name__}: {exc}"
                self._wake()
                return

    def _wanted(self, change: Any, path: str) -> bool:
        return path in self._files

    def _wake(self) -> None:
        try:
            os.write(self._write_fd, b"!")
        except OSError:
            pass  # the pipe is full (the master will look) or closed (it is stopping)

    def close(self) -> None:
        self._closing = True
        self._restart.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.close_fds()

    def close_fds(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self._write_fd = -1


def _dirs(files: frozenset[str]) -> set[str]:
    return {os.path.dirname(path) for path in files}
