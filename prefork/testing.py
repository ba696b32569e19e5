# Running the real server from tests. ``serve`` starts ``python -m prefork``
# as a subprocess in its own session, on a listening socket it binds itself
# (127.0.0.1:0, passed as fd://N, so the port is known before the server starts
# and nothing races for it), and waits for the server's sd_notify READY=1 on a
# socket it owns: no polling of the port, no fixed sleeps. On exit the server
# gets SIGTERM, then SIGKILL to its whole process group after a deadline.
#
# ``ServerPool`` shares servers between tests: one per distinct set of
# arguments, stopped together when the pool closes. A shared server that has
# died is reported, never silently restarted, so the test that broke it is the
# one that gets looked at.
#
# When this process measures coverage, the server measures too, through
# coverage.py's own subprocess support: its configuration goes to the server in
# COVERAGE_PROCESS_CONFIG, with ``patch = fork`` (a fresh measurement in each
# worker after the fork) and ``patch = _exit`` (workers leave through
# os._exit, which then saves their data first).
from __future__ import annotations

import contextlib
import copy
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .settings import BY_NAME

__all__ = ["Server", "ServerError", "ServerPool", "log_tail", "serve", "settings_to_args"]

# The oldest coverage.py with COVERAGE_PROCESS_CONFIG and ``patch = fork``.
COVERAGE_MIN_VERSION = (7, 10, 4)
# Start coverage before prefork is imported, whether or not coverage's .pth
# file already did (process_startup() does nothing the second time).
_COVERAGE_BOOT = (
    "import coverage; coverage.process_startup(); import runpy; "
    "runpy.run_module('prefork', run_name='__main__', alter_sys=True)"
)


class ServerError(AssertionError):
    """The server did not start, or did not stop, as expected; carries its log."""


def settings_to_args(settings: Mapping[str, Any]) -> list[str]:
    """Turn ``{"timeout": 5, "bind": [...]}`` into command-line flags."""
    args: list[str] = []
    for name, value in settings.items():
        setting = BY_NAME.get(name)
        if setting is None or not setting.flags:
            raise TypeError(f"unknown prefork setting {name!r}")
        flag = setting.option_name
        if setting.is_flag:
            if value:
                args.append(flag)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            args += [flag, str(item)]
    return args


class Server:
    """A running prefork server, as seen from a test."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: str,
                 notify: socket.socket, app: str = "") -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.app = app
        self._notify = notify
        self.messages: list[str] = []
        self.shared_by: str | None = None  # the scope of the ServerPool that shares it

    def __repr__(self) -> str:
        return f"<Server {self.app} at {self.url or self.log_path} (master pid {self.proc.pid})>"

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def worker_pids(self) -> list[int]:
        """The pids of the master's current child processes."""
        return child_pids(self.proc.pid)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_size(self) -> int:
        """How many bytes the server has logged so far (0 once its log is gone)."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def check_alive(self) -> None:
        """Raise ``ServerError``, with the end of the log, if the master has exited."""
        if self.proc.poll() is None:
            return
        shared = f", shared by the {self.shared_by}" if self.shared_by else ""
        raise ServerError(
            f"the prefork server {self.app!r} (master pid {self.proc.pid}{shared}) has "
            f"{describe_status(self.proc.returncode)} before this test: an earlier test "
            "stopped or killed it, or it failed. Shared servers are not restarted; give a test "
            "that stops, kills or reconfigures its server a server of its own (the "
            "prefork_server fixture).\n"
            f"The last lines of its log:\n{log_tail(self, 20)}"
        )

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """Wait until the log (from offset ``start``) matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), start)
            if match:
                return match
            if time.monotonic() > deadline:
                raise ServerError(f"log did not match {pattern!r} within {timeout} s:\n{self.log_text()}")
            time.sleep(0.02)

    def wait_notify(self, key: str, timeout: float = 30.0) -> str:
        """Wait for an sd_notify message containing ``key`` (e.g. "READY=1")."""
        deadline = time.monotonic() + timeout
        pidfd = _pidfd(self.proc.pid)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerError(f"no {key} within {timeout} s; log:\n{self.log_text()}")
                watch: list[Any] = [self._notify] + ([pidfd] if pidfd is not None else [])
                readable, _, _ = select.select(watch, [], [], min(remaining, 0.2 if pidfd is None else remaining))
                if self._notify in readable:
                    message = self._notify.recv(65536).decode("utf-8", "replace")
                    self.messages.append(message)
                    if key in message.split("\n"):
                        return message
                    continue
                if self.proc.poll() is not None:
                    raise ServerError(
                        f"server exited with status {self.proc.returncode} before {key}; "
                        f"log:\n{self.log_text()}"
                    )
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def wait_workers(self, count: int, timeout: float = 10.0, exclude: Sequence[int] = ()) -> list[int]:
        """Wait until the master has ``count`` children, none of them in ``exclude``."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) == count and not set(pids) & set(exclude):
                return pids
            if time.monotonic() > deadline:
                raise ServerError(f"expected {count} workers, have {pids}; log:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the master and wait for it; SIGKILL the group after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait(5)
                raise ServerError(f"server did not stop within {timeout} s; log:\n{self.log_text()}") from None
        return self.proc.returncode


def describe_status(returncode: int) -> str:
    """``exited with status 1`` or ``been killed by SIGKILL``, for a Popen returncode."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"been killed by {name}"


def log_tail(server: Server, lines: int, since: int | None = None) -> str:
    """The last ``lines`` lines of the server's log. When ``since`` (a log offset,
    e.g. where a test began) falls inside them, a marker line shows where."""
    try:
        with open(server.log_path, "rb") as f:
            data = f.read()
    except OSError:
        return "(the server's log is gone)"
    cut = min(since or 0, len(data))
    before = data[:cut].decode("utf-8", "replace").splitlines()
    after = data[cut:].decode("utf-8", "replace").splitlines()
    if len(after) >= lines or not before:
        return "\n".join(after[-lines:] if lines else [])
    kept = before[-(lines - len(after)):]
    marker = "----- (the test began here) -----" if after else "----- (nothing logged since the test began) -----"
    return "\n".join([*kept, marker, *after])


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def child_pids(pid: int) -> list[int]:
    """Children of ``pid``: from /proc on Linux, from ps(1) elsewhere."""
    if os.path.isdir("/proc/self"):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != b"Z":
                pids.append(int(entry))
        return sorted(pids)
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat="], capture_output=True, text=True).stdout
    return sorted(int(p) for p, pp, st in (line.split()[:3] for line in out.splitlines())
                  if int(pp) == pid and not st.startswith("Z"))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def serve(
    app: str,
    workers: int = 1,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    ready_timeout: float = 30.0,
    stop_timeout: float = 40.0,
    wait_ready: bool = True,
    wrapper: Sequence[str] = (),
    measure_coverage: bool = True,
    **settings: Any,
) -> Iterator[Server]:
    """Run ``prefork APP`` for the duration of a ``with`` block.

    ``settings`` are prefork settings by config name (``timeout=5``,
    ``graceful_timeout=2``); ``args`` are extra raw command-line arguments;
    ``wrapper`` is a command to run prefork under (it must exec it, e.g.
    ``["systemd-socket-activate", "-l", "127.0.0.1:8000"]``).
    Unless ``bind`` is given, the server listens on a fresh 127.0.0.1 port.
    When this process measures coverage, the server does too, unless
    ``measure_coverage`` is false.
    """
    tmp = tempfile.mkdtemp(prefix="prefork-test-")
    log_path = os.path.join(tmp, "server.log")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(tmp, "notify.sock"))
    listener = None
    pass_fds: tuple[int, ...] = ()
    url = ""
    if "bind" not in settings:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        settings = {"bind": f"fd://{listener.fileno()}", **settings}
        pass_fds = (listener.fileno(),)
    else:
        bind = settings["bind"]
        first = bind[0] if isinstance(bind, (list, tuple)) else bind
        if not str(first).startswith(("unix:", "fd://")):
            url = f"http://{first}"
    child_env = dict(os.environ if env is None else env)
    coverage_config = current_coverage_config() if measure_coverage else None
    if coverage_config is None:
        python = [sys.executable, "-m", "prefork"]
    else:
        python = [sys.executable, "-c", _COVERAGE_BOOT]
        child_env["COVERAGE_PROCESS_CONFIG"] = coverage_config
    cmd = [*wrapper, *python, "-w", str(workers), *settings_to_args(settings), *args, app]
    child_env["NOTIFY_SOCKET"] = notify.getsockname()
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=child_env, cwd=cwd,
        pass_fds=pass_fds, start_new_session=True,
    )
    log_file.close()
    if listener is not None:
        listener.close()  # the server has its own copy
    server = Server(proc, url, log_path, notify, app)
    try:
        if wait_ready:
            server.wait_notify("READY=1", ready_timeout)
        yield server
    finally:
        try:
            if proc.poll() is None:
                server.stop(timeout=stop_timeout)
        finally:
            kill_group(proc.pid)
            if proc.poll() is None:
                proc.wait(5)
            notify.close()
            shutil.rmtree(tmp, ignore_errors=True)


def current_coverage_config() -> str | None:
    """The coverage configuration for a server, serialized, when this process
    is measuring coverage; else None. coverage.py is never imported here: if
    nothing has imported it, nothing is measuring."""
    coverage = sys.modules.get("coverage")
    current = getattr(getattr(coverage, "Coverage", None), "current", None)
    measuring = current() if current is not None else None
    if measuring is None:
        return None
    if tuple(coverage.version_info[:3]) < COVERAGE_MIN_VERSION:  # type: ignore[union-attr]
        warnings.warn(
            f"prefork: coverage.py {coverage.__version__} cannot measure the server's "  # type: ignore[union-attr]
            "workers (7.10.4 or newer can); the server runs unmeasured",
            stacklevel=3,
        )
        return None
    config = copy.copy(measuring.config)
    config.parallel = True  # one data file per process, combined afterwards
    config.patch = sorted({*config.patch, "fork", "_exit"})
    return str(config.serialize())


class ServerPool:
    """Servers shared by several tests, one per distinct set of arguments.

    ``pool(app, workers=1, **kwargs)`` takes the arguments of ``serve`` and
    returns a ready ``Server``: the one already started with the same
    arguments, or a new one. Asked again for a server that has died, it raises
    ``ServerError`` instead of starting another. With ``reuse=False`` every
    call starts a new server. ``close()`` stops them all.
    """

    def __init__(self, scope: str = "session", reuse: bool = True) -> None:
        self.scope = scope
        self.reuse = reuse
        self._stack = contextlib.ExitStack()
        self._by_key: dict[str, Server] = {}
        self.servers: list[Server] = []

    def __repr__(self) -> str:
        return f"<ServerPool {self.scope}: {len(self.servers)} server(s)>"

    def __call__(self, app: str, workers: int = 1, **kwargs: Any) -> Server:
        key = repr((app, workers, sorted(kwargs.items())))
        server = self._by_key.get(key)
        if server is not None:
            server.check_alive()
            return server
        server = self._stack.enter_context(serve(app, workers, **kwargs))
        self.servers.append(server)
        if self.reuse:
            server.shared_by = self.scope
            self._by_key[key] = server
        return server

    def close(self) -> None:
        """Stop every server of the pool."""
        try:
            self._stack.close()
        finally:
            self._by_key.clear()
            self.servers.clear()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
