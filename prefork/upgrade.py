# The binary upgrade (USR2): the master starts a new master from the same
# command line, handing it the listening sockets through the environment.
# Both serve until the operator stops the old one (or --upgrade-auto does,
# once the new one is ready); if the new one exits first, the old one keeps
# serving as if nothing had happened. Each master knows the other by pid.
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from .binding import FDS_ENV, handover_env
from .logs import Logger
from .pidfile import Pidfile, alive
from .sockets import Listener

UPGRADE_FROM_ENV = "PREFORK_UPGRADE_FROM"  # the pid of the master that started this one
OLDBIN = ".oldbin"  # the old master's pid file while an upgrade is under way


class Upgrade:
    """Both ends of an upgrade, as seen from one master."""

    def __init__(self, log: Logger) -> None:
        self.log = log
        self.new_master = 0  # the one this master started, while it runs
        self.replaces = int(os.environ.pop(UPGRADE_FROM_ENV, "0") or 0)  # the one that started us

    def refusal(self) -> str:
        """Why a USR2 cannot start an upgrade now, or ""."""
        if self.new_master:
            return f"an upgrade (new master {self.new_master}) is in progress"
        if self.replaces and alive(self.replaces):
            return f"the master this one replaced ({self.replaces}) is still running"
        return ""

    def start(self, pidfile: Pidfile | None, exec_new: Callable[[], None]) -> None:
        """Fork; the child runs ``exec_new`` (which calls ``exec``); never returns there."""
        if pidfile is not None:
            pidfile.rename(pidfile.path + OLDBIN)
        pid = os.fork()
        if pid:
            self.new_master = pid
            self.log.info("Upgrade: started a new master (pid %s)", pid)
            return
        try:
            exec_new()
        finally:
            os._exit(1)

    def failed(self, how: str, pidfile: Pidfile | None) -> None:
        """The new master exited: this one keeps serving, under its own pid file."""
        self.log.error("Upgrade failed: the new master %s exited (%s); this master keeps serving",
                       self.new_master, how)
        self.new_master = 0
        if pidfile is not None and pidfile.path.endswith(OLDBIN):
            pidfile.rename(pidfile.path[: -len(OLDBIN)])

    def took_over(self, pid: int, auto: bool) -> None:
        """This master is ready: the old one may go (--upgrade-auto stops it)."""
        if not self.replaces:
            return
        self.log.info("Upgrade: this master (%s) replaces %s", pid, self.replaces)
        if auto and alive(self.replaces):
            self.log.info("Upgrade: stopping the old master %s (--upgrade-auto)", self.replaces)
            try:
                os.kill(self.replaces, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def successor_running(self) -> bool:
        return bool(self.new_master) and alive(self.new_master)

    def other_master_running(self) -> bool:
        """Another master still uses the sockets (the new one, or the old one)."""
        return any(pid and alive(pid) for pid in (self.new_master, self.replaces))

    def replaced_running(self) -> bool:
        """This master is the new one of an upgrade and the old one still runs."""
        return bool(self.replaces) and alive(self.replaces)


def exec_new_master(listeners: list[Listener], activated: bool, watchdog: bool, cwd: str,
                    old_master: int) -> None:
    """In the forked child: become the new master (same interpreter, same arguments)."""
    env = dict(os.environ)
    env[FDS_ENV] = handover_env(listeners, activated)
    env[UPGRADE_FROM_ENV] = str(old_master)
    if watchdog and env.get("WATCHDOG_PID"):
        env["WATCHDOG_PID"] = str(os.getpid())  # the watchdog passes to the new master (this pid)
    signal.set_wakeup_fd(-1)
    os.chdir(cwd)
    argv = [sys.executable, *sys.orig_argv[1:]]
    # In this forked child only: the master's own descriptors stay close-on-exec.
    for listener in listeners:
        os.set_inheritable(listener.fileno(), True)
    os.execve(sys.executable, argv, env)
