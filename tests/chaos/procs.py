"""What the chaos scenarios need to know about processes, read from /proc
(Linux only), and the little they do to them: freeze, kill, limit, flood."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

from conftest import alive, sleeping, wait_until

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Runs prefork with a lower RLIMIT_NOFILE: ``serve(..., wrapper=nofile_wrapper(64))``.
# The limit is set in the child that then becomes prefork, so the master and
# every worker it forks have it from the start.
_SET_NOFILE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def nofile_wrapper(limit: int) -> list[str]:
    return [sys.executable, "-c", _SET_NOFILE, str(limit)]


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1].split()


def state(pid: int) -> str:
    """The process state letter (R, S, T, Z...), or "" if it is gone."""
    try:
        return _stat_fields(pid)[0]
    except (OSError, IndexError):
        return ""


def age(pid: int) -> float:
    """Seconds since the process started."""
    started = int(_stat_fields(pid)[19]) / _CLK_TCK
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - started


def wait_gone(pids, timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running at the deadline."""
    wait_until(lambda: not any(alive(p) for p in pids), timeout)
    return [p for p in pids if alive(p)]


def sleeping_threads(pid: int) -> int:
    """How many threads of ``pid`` are inside a sleep (the test apps' time.sleep)."""
    try:
        return sum(sleeping(int(tid)) for tid in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def wait_reaped(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone from the process table, zombie included: a
    process that is not our child is reaped by whoever adopted it, later."""
    return wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def held_client_ports(pid: int, server_port: int) -> set[int]:
    """The client ports of the connections to ``server_port`` that process
    ``pid`` holds (its accepted sockets; the listener has no peer)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if inode in inodes and int(local.rsplit(":", 1)[1], 16) == server_port:
                    peer = int(remote.rsplit(":", 1)[1], 16)
                    if peer:
                        ports.add(peer)
    return ports


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def freeze(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped: what it holds no longer changes."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while state(pid) not in ("T", "t"):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout} s")
        time.sleep(0.001)


def port_bindable(port: int) -> str:
    """"" if a new server could listen on 127.0.0.1:``port`` now (as prefork
    binds: SO_REUSEADDR), else the error."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError as exc:
            return str(exc)
    return ""


def holders_of_port(port: int) -> list[int]:
    """Pids that hold a socket listening on ``port`` (for failure messages)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(int(fields[9]))
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if _socket_inodes(int(entry)) & listening:
                    pids.append(int(entry))
    return pids


def _handled(server, name):
    return server.log_text().count(f"Handling signal: {name}")


def send_counted(server, pid: int, sig: int, timeout: float = 10.0) -> None:
    """Send ``sig`` to ``pid`` and wait until a master has logged handling it."""
    name = signal.Signals(sig).name[3:].lower()
    before = _handled(server, name)
    os.kill(pid, sig)
    assert wait_until(lambda: _handled(server, name) > before, timeout), (
        f"{name} to {pid} not handled within {timeout} s; log:\n{server.log_text()[-3000:]}")


class SignalFlood(threading.Thread):
    """Send ``sig`` to ``pid`` at ``rate`` per second for ``seconds``."""

    def __init__(self, pid: int, sig: int, rate: int, seconds: float) -> None:
        super().__init__(name="chaos-signal-flood", daemon=True)
        self.pid, self.sig, self.rate, self.seconds = pid, sig, rate, seconds
        self.sent = 0
        self.error = ""

    def run(self) -> None:
        start = time.monotonic()
        batch = max(1, self.rate // 200)
        while (elapsed := time.monotonic() - start) < self.seconds:
            try:
                for _ in range(batch):
                    os.kill(self.pid, self.sig)
                    self.sent += 1
            except OSError as exc:
                self.error = str(exc)
                return
            # pacing, not synchronisation: keep to the rate
            ahead = self.sent / self.rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
