# Servers under test, as process groups. Every server is started in a new
# session, so its process group id is its own pid and whatever it forks stays
# in that group. The runner signals nothing but such a group or its leader
# (our own child), and never reaps the leader before the group is empty: an
# unreaped zombie keeps its pid, so the group id cannot be handed to an
# unrelated process while we might still signal it. Every wait is bounded.
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.005  # seconds between checks while waiting for a process to go


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie: exited, not yet reaped) ...
    pgrp: int
    session: int
    user: int  # utime + cutime, ticks: own CPU plus that of reaped children
    system: int  # stime + cstime


def proc_stat(pid: int) -> ProcStat | None:
    text = read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    rest = text[text.rfind(")") + 2:].split()
    # rest[0]=state [2]=pgrp [3]=session [11]=utime [12]=stime [13]=cutime [14]=cstime
    user = int(rest[11]) + int(rest[13])
    system = int(rest[12]) + int(rest[14])
    return ProcStat(pid, rest[0], int(rest[2]), int(rest[3]), user, system)


def group_members(pgid: int) -> dict[int, ProcStat]:
    """Processes in process group ``pgid`` of session ``pgid`` (a group we made)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st.pgrp == pgid and st.session == pgid:
                found[st.pid] = st
    return found


def cpu_between(before: dict[int, ProcStat], after: dict[int, ProcStat]) -> tuple[float, float]:
    """(user, system) CPU seconds the group spent between two snapshots.
    Children reaped in between are in their parent's cutime/cstime; one that
    died unreaped is missed."""
    user = system = 0
    for pid, st in after.items():
        old = before.get(pid)
        user += st.user - (old.user if old else 0)
        system += st.system - (old.system if old else 0)
    return user / CLK_TCK, system / CLK_TCK


def _kib_field(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of one process in KiB; (0, 0) if it is gone."""
    rss = _kib_field(read_text(f"/proc/{pid}/status"), "VmRSS:")
    pss = _kib_field(read_text(f"/proc/{pid}/smaps_rollup"), "Pss:")
    return rss, pss


def host_cpu() -> tuple[int, int, int]:
    """(busy, steal, total) ticks of the whole machine, from /proc/stat."""
    first = (read_text("/proc/stat") or "cpu 0").splitlines()[0].split()
    v = [int(x) for x in first[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


@dataclass
class MemorySnapshot:
    """Memory of a server group: the leader (master) and the other processes."""

    leader: int
    per_pid: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (rss, pss) KiB

    def master(self) -> tuple[int, int] | None:
        """The leader's (rss, pss), or None for a single-process server."""
        if len(self.per_pid) < 2:
            return None
        return self.per_pid.get(self.leader)

    def workers(self) -> dict[int, tuple[int, int]]:
        """Processes that serve: all but the leader, or the leader if it is alone."""
        if len(self.per_pid) < 2:
            return dict(self.per_pid)
        return {pid: m for pid, m in self.per_pid.items() if pid != self.leader}

    def summary(self) -> dict[str, float | int | None]:
        master = self.master()
        workers = self.workers().values()
        return {
            "procs": len(self.per_pid),
            "master_rss_kib": master[0] if master else None,
            "master_pss_kib": master[1] if master else None,
            "worker_rss_kib": max((m[0] for m in workers), default=None),
            "worker_pss_kib": max((m[1] for m in workers), default=None),
            "total_pss_kib": sum(m[1] for m in self.per_pid.values()),
        }


def snapshot(pgid: int) -> MemorySnapshot:
    snap = MemorySnapshot(pgid)
    for pid in group_members(pgid):
        rss, pss = memory_kib(pid)
        if rss:
            snap.per_pid[pid] = (rss, pss)
    return snap


class PeakSampler(threading.Thread):
    """Samples a group's memory every ``interval`` s; keeps each process's peak."""

    def __init__(self, pgid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.peak = MemorySnapshot(pgid)
        self.pgid = pgid
        self.interval = interval
        self.peak_total_pss_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        snap = snapshot(self.pgid)
        for pid, (rss, pss) in snap.per_pid.items():
            old = self.peak.per_pid.get(pid, (0, 0))
            self.peak.per_pid[pid] = (max(old[0], rss), max(old[1], pss))
        self.peak_total_pss_kib = max(self.peak_total_pss_kib,
                                      sum(p for _, p in snap.per_pid.values()))
        self.samples += 1

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> MemorySnapshot:
        self._halt.set()
        self.join(timeout=10)
        self.sample()
        return self.peak


class ServerProcess:
    """One start of one server: its own session, process group and log file."""

    # started and not yet reaped: what an interrupted run must still kill
    live: set[ServerProcess] = set()

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str,
                 log_path: str) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        self._reaped = False

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # session leader: pid == pgid == sid

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.launched_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ServerProcess.live.add(self)

    def leader_exited(self) -> bool:
        """Has the leader exited? Looks without reaping it (WNOWAIT)."""
        if self.proc is None or self._reaped:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.proc.pid, flags) is not None

    def members(self) -> dict[int, ProcStat]:
        return group_members(self.pgid) if self.proc is not None else {}

    def running(self) -> list[int]:
        """Processes of the group that have not exited (zombies have)."""
        return [pid for pid, st in self.members().items() if st.state != "Z"]

    def send(self, sig: int, whole_group: bool) -> None:
        """Signal our group, or only its leader. Safe while the leader is
        unreaped: its pid and group id cannot belong to anyone else."""
        if self.proc is None or self._reaped:
            return
        try:
            if whole_group:
                os.killpg(self.pgid, sig)
            elif not self.leader_exited():
                os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait_gone(self, timeout: float) -> float | None:
        """Seconds until the leader and every process of its group are gone,
        or None if they are not gone within ``timeout``."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if self.leader_exited() and not self.running():
                return time.monotonic() - start
            time.sleep(POLL)
        return None

    def stop(self, timeout: float, whole_group: bool = True,
             sig: int = signal.SIGTERM) -> dict[str, object]:
        """``sig`` to the group (or leader), wait up to ``timeout``; SIGKILL to
        the group if anything is left. Then reap the leader."""
        if self.proc is None:
            return {}
        t0 = time.monotonic()
        self.send(sig, whole_group)
        waited = self.wait_gone(timeout)
        killed = waited is None
        if killed:
            self.send(signal.SIGKILL, whole_group=True)
            self.wait_gone(10.0)
        code = self.reap()
        return {"exit": code, "stop_s": round(waited if waited is not None else
                                              time.monotonic() - t0, 4),
                "killed": killed}

    def reap(self) -> int | None:
        if self.proc is None or self._reaped:
            return self.proc.returncode if self.proc else None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None
        self._reaped = True
        ServerProcess.live.discard(self)
        return code

    @classmethod
    def kill_all(cls) -> None:
        """SIGKILL every group still alive (an interrupted run), then reap."""
        for srv in list(cls.live):
            srv.send(signal.SIGKILL, whole_group=True)
            srv.wait_gone(10.0)
            srv.reap()

    def log_tail(self, lines: int = 15) -> str:
        text = read_text(self.log_path) or ""
        return "\n".join(text.splitlines()[-lines:])
