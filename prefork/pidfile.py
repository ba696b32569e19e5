# The master's pid file: written atomically (a temporary file renamed into
# place, so a reader never sees a partial pid), removed on exit only if it
# still names this process, and safe against a stale file left by a crash.
from __future__ import annotations

import os
import tempfile


class PidfileError(Exception):
    """The pid file cannot be written; the message is one line."""


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def create(self, pid: int) -> None:
        other = read_pid(self.path)
        if other is not None and other != pid and _is_running_prefork(other):
            raise PidfileError(f"pid file {self.path} names a running prefork master ({other})")
        self._write(pid)

    def _write(self, pid: int) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            fd, tmp = tempfile.mkstemp(prefix=".prefork-pid-", dir=directory)
        except OSError as exc:
            raise PidfileError(f"cannot write pid file {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, f"{pid}\n".encode())
            os.fchmod(fd, 0o644)
            os.close(fd)
            os.rename(tmp, self.path)
        except OSError as exc:
            os.unlink(tmp)
            raise PidfileError(f"cannot write pid file {self.path}: {exc.strerror}") from None

    def rename(self, path: str) -> None:
        """Move the file (``PIDFILE.oldbin`` during an upgrade); keep using the new name."""
        path = os.path.abspath(path)
        try:
            os.rename(self.path, path)
        except FileNotFoundError:
            pass
        self.path = path

    def unlink(self, pid: int) -> None:
        if read_pid(self.path) == pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    """Whether a process with this pid is running. A zombie is not: an old
    master that has exited but that its parent has not reaped yet (a container
    without an init that reaps) must not block the next upgrade."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return not f.read().rsplit(b") ", 1)[1].startswith(b"Z")
    except (OSError, IndexError):
        return True  # no /proc (macOS): it exists


def _is_running_prefork(pid: int) -> bool:
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"prefork" in f.read()
    except OSError:
        return True  # no /proc: assume the worst
