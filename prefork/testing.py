# Running the real server from tests. ``serve`` starts ``python -m prefork``
# as a subprocess in its own session, on a listening socket it binds itself
# (127.0.0.1:0, passed as fd://N, so the port is known before the server starts
# and nothing races for it), and waits for the server's sd_notify READY=1 on a
# socket it owns: no polling of the port, no fixed sleeps. On exit the server
# gets SIGTERM, then SIGKILL to its whole process group after a deadline.
from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .settings import BY_NAME

__all__ = ["Server", "ServerError", "serve", "settings_to_args"]


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
                 notify: socket.socket) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self._notify = notify
        self.messages: list[str] = []

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
    **settings: Any,
) -> Iterator[Server]:
    """Run ``prefork APP`` for the duration of a ``with`` block.

    ``settings`` are prefork settings by config name (``timeout=5``,
    ``graceful_timeout=2``); ``args`` are extra raw command-line arguments;
    ``wrapper`` is a command to run prefork under (it must exec it, e.g.
    ``["systemd-socket-activate", "-l", "127.0.0.1:8000"]``).
    Unless ``bind`` is given, the server listens on a fresh 127.0.0.1 port.
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
    cmd = [*wrapper, sys.executable, "-m", "prefork", "-w", str(workers), *settings_to_args(settings), *args, app]
    child_env = dict(os.environ if env is None else env)
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
    server = Server(proc, url, log_path, notify)
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
