# The supervision decisions, apart from the processes: given the master's
# worker records, the size it wants and a clock reading, what to spawn and
# what to retire, and why. Pure: it sends no signal and forks nothing, so the
# rules are tested with fake records and a fake clock. The arbiter carries
# the plan out. This holds the maintenance step, the boot staggering and the
# crash back-off, and the server's phase; the recycling and scaling decisions
# are in recycling.py and scaling.py, in the same style.
#
# The rule that matters: capacity never drops on purpose. A worker that is
# no longer wanted (an old generation, or one that asked to be replaced) is
# retired only while enough *ready* wanted workers remain to keep the pool at
# its size; one still booting serves nobody, so retiring it costs nothing.
from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .heartbeat import BOOTING
from .recycling import KILL
from .stats import MAX_REQUESTS, RELOAD, SCALE_DOWN

if TYPE_CHECKING:
    from .records import WorkerRecord

# A worker that dies sooner than this after it started counts toward a crash
# loop; each one in a row doubles the wait before the next spawn, up to the cap.
CRASH_WINDOW = 5.0
BACKOFF_FIRST = 0.25
BACKOFF_CAP = 5.0
# Before the server has been healthy, this many failed spawns in a row (fork or
# heartbeat file: EAGAIN, ENOSPC, EMFILE...) stop it; later they only back off.
SPAWN_ATTEMPTS = 4
# At most one worker per usable core loads the application at a time (see
# WorkerSet.boot_slots); one that has been loading longer than this, most
# likely waiting on I/O rather than using a core, no longer holds its place.
BOOT_STAGGER_MAX = 0.5
# After SIGABRT a stuck worker gets this long to write its stack before SIGKILL.
ABORT_GRACE = 2.0

# What ``WorkerSet.overdue`` finds: a worker to abort (SIGABRT: it logs its
# stack, then exits), one to kill (SIGKILL, as recycling's hard memory limit
# does), or a torn heartbeat read (no action: only worth a debug line).
ABORT, TORN = "abort", "torn"


class Phase(str, enum.Enum):
    """Where the server as a whole is; ``Arbiter.phase`` is the one place it is kept."""

    STARTING = "starting"  # the first generation of workers is booting
    RUNNING = "running"
    RELOADING = "reloading"  # a new generation is rolling in (HUP, --reload)
    UPGRADING = "upgrading"  # a new master started by USR2 is running beside this one
    STOPPING = "stopping"  # a stop has begun, or is scheduled (--shutdown-delay)

    def __str__(self) -> str:
        return self.value


@dataclass
class Verdict:
    record: WorkerRecord
    action: str  # ABORT, KILL or TORN
    silent: float = 0.0  # ABORT: seconds without a beat
    beat: float = 0.0  # TORN: the impossible beat that was read
    booting: bool = False  # ABORT: stuck loading the application (--boot-timeout)
    late: bool = False  # KILL: still running at the stop's deadline (else: ignored its SIGABRT)


@dataclass
class Plan:
    spawn: int = 0
    retire: list[tuple[WorkerRecord, str]] = field(default_factory=list)


def replacement_reason(record: WorkerRecord) -> str:
    """Why a worker that is not wanted any more is being replaced."""
    if record.replace:
        return record.replace
    return MAX_REQUESTS if record.slot.retire_requested() else RELOAD


def live(record: WorkerRecord) -> bool:
    """Not on its way out: not retiring, killed or aborted."""
    return not (record.retiring or record.killed or record.aborted_at)


def wanted(record: WorkerRecord, generation: int) -> bool:
    """Live, of the current generation, and not waiting for a successor."""
    return (live(record) and record.generation == generation
            and not record.slot.retire_requested() and not record.replace)


def backoff(failures: int) -> float:
    """The wait after ``failures`` (>= 1) in a row: doubling, up to the cap."""
    return float(min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_CAP))


class WorkerSet:
    """The master's spawning policy and its memory of failures: ``plan`` once
    per turn of its loop, and ``crashed``/``spawn_failed``/``spawned`` as
    things happen. Times are the master's ``time.monotonic()`` readings."""

    def __init__(self, cores: int = 1) -> None:
        self.cores = max(1, cores)  # at most this many workers load the application at once
        self.preloaded = False  # --preload: the application is loaded before the fork
        self.spawn_after = 0.0  # no spawn before this (a back-off)
        self.boot_check = 0.0  # when a booting worker stops holding back the next one
        self.crash_streak = 0  # workers in a row that died soon after they started
        self.spawn_failures = 0  # fork() or heartbeat-file failures in a row

    def plan(self, records: Iterable[WorkerRecord], size: int, generation: int,
             now: float) -> Plan:
        """Spawn toward ``size`` wanted workers (within the boot slots, after the
        back-off); retire the unwanted as ready replacements take their place,
        and the extra wanted ones when ``size`` fell."""
        records = list(records)
        current = [r for r in records if live(r)]
        keep = [r for r in current if wanted(r, generation)]
        stale = sorted((r for r in current if not wanted(r, generation)), key=lambda r: r.age)
        plan = Plan()
        missing = size - len(keep)
        if missing > 0 and now >= self.spawn_after:
            # With --preload there is nothing to load: every missing worker at once.
            plan.spawn = missing if self.preloaded else min(missing, self.boot_slots(records, now))
        ready_kept = sum(1 for r in keep if r.ready)
        ready_stale = [r for r in stale if r.ready]
        spare = max(0, ready_kept + len(ready_stale) - size)
        for record in [r for r in stale if not r.ready] + ready_stale[:spare]:
            plan.retire.append((record, replacement_reason(record)))
        if len(keep) > size:
            extra = sorted(keep, key=lambda r: (r.ready, r.age))[: len(keep) - size]
            plan.retire += [(record, SCALE_DOWN) for record in extra]
        return plan

    def boot_slots(self, records: Iterable[WorkerRecord], now: float) -> int:
        """How many more workers may start loading the application now.

        Workers that import the application at the same time share the cores:
        with 4 workers on 2 cores each import takes twice as long, and the
        first request waits for the first of them. With at most one worker
        per core loading at a time, the first is ready as soon as it can be,
        and when loading is CPU-bound the last is ready no later than before.
        One that has been loading for BOOT_STAGGER_MAX, most likely waiting on
        I/O rather than using a core, no longer holds its place.
        """
        self.boot_check = 0.0
        booting = 0
        for record in records:
            if record.killed or record.ready or record.slot.state() != BOOTING:
                continue
            held_until = record.started + BOOT_STAGGER_MAX
            if now < held_until:
                booting += 1
                self.boot_check = min(self.boot_check or held_until, held_until)
        return max(0, self.cores - booting)

    def crashed(self, started: float, now: float, always: bool = False) -> float:
        """A worker died unexpectedly (or failed to boot, ``always``). Returns the
        wait before the next spawn: 0 unless workers keep dying within
        CRASH_WINDOW of their start (the first such death waits for nothing)."""
        if now - started > CRASH_WINDOW and not always:
            self.crash_streak = 0
            return 0.0
        self.crash_streak += 1
        if self.crash_streak < 2:
            return 0.0
        delay = backoff(self.crash_streak - 1)
        self.spawn_after = now + delay
        return delay

    def spawn_failed(self, now: float, healthy: bool) -> float | None:
        """fork() or the heartbeat file failed. Returns the wait before the next
        try, or None: give up (SPAWN_ATTEMPTS in a row before the server was
        ever ready)."""
        self.spawn_failures += 1
        if not healthy and self.spawn_failures >= SPAWN_ATTEMPTS:
            return None
        delay = backoff(self.spawn_failures)
        self.spawn_after = now + delay
        return delay

    def spawned(self) -> None:
        self.spawn_failures = 0

    def hold(self, until: float) -> None:
        """Start no worker before ``until``."""
        self.spawn_after = max(self.spawn_after, until)

    def overdue(self, records: Iterable[WorkerRecord], clock: Callable[[], float],
                timeout: float, boot_timeout: float, stop_deadline: float = 0.0) -> list[Verdict]:
        """The workers to abort or kill now, and why.

        Past ``stop_deadline`` (a stop under way; 0: none) every worker left is
        killed. A worker silent for longer than its limit (``boot_timeout``
        while it loads the application, else ``timeout``; 0 turns one off) is
        aborted, and killed if it is still there ABORT_GRACE later."""
        now = clock()
        verdicts = []
        for record in records:
            if record.killed:
                continue
            if stop_deadline and now > stop_deadline:
                verdicts.append(Verdict(record, KILL, late=True))
            elif record.aborted_at:
                if now - record.aborted_at > ABORT_GRACE:
                    verdicts.append(Verdict(record, KILL))
            else:
                booting = not record.ready and record.slot.state() == BOOTING
                limit = boot_timeout if booting else timeout
                verdict = silence(record, limit, clock) if limit else None
                if verdict is not None:
                    verdict.booting = booting
                    verdicts.append(verdict)
        return verdicts

    def next_check(self, now: float) -> float:
        """The earliest time a plan may differ for the clock alone (0: none)."""
        times = [t for t in (self.spawn_after, self.boot_check) if t > now]
        return min(times, default=0.0)


def silence(record: WorkerRecord, limit: float, clock: Callable[[], float]) -> Verdict | None:
    """ABORT if the worker has not beaten for longer than ``limit``, TORN for
    an impossible read, else None.

    A worker is aborted on two reads that agree, never on one: a read that
    the worker's write overtook is followed by one that sees its new beat.
    A beat no worker can have written (0.0, from the future, older than the
    slot) is a torn read, not a stuck worker."""
    slot = record.slot
    silent = 0.0
    for _ in range(2):
        beat = slot.last_beat()
        now = clock()
        if not slot.created <= beat <= now:
            return Verdict(record, TORN, beat=beat)
        silent = now - beat
        if silent <= limit:
            return None
    return Verdict(record, ABORT, silent=silent)
