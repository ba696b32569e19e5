# Recycling by age and by memory: which workers the master replaces because
# they have lived too long or use too much memory, and which it kills because
# they passed the hard memory limit. The recycler only decides; the arbiter
# carries its actions out. A replacement goes through the same path as
# --max-requests (``WorkerRecord.replace``: the successor is started and
# ready first, then the worker is retired and announces ``Connection: close``),
# so no client notices it.
#
# Reading memory costs the master: /proc/PID/smaps_rollup walks the worker's
# page tables. Each worker is sampled once per ``MEMORY_INTERVAL``, and a turn
# of the master's loop reads for at most ``MEMORY_BUDGET`` seconds; workers
# not reached are read in the next turns, so the loop never stalls on a large
# pool of large workers.
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .metrics import worker_memory
from .stats import LIFETIME, MEMORY

if TYPE_CHECKING:
    from .logs import Logger
    from .records import WorkerRecord
    from .settings import Config

MEMORY_INTERVAL = 1.0  # seconds between two samples of one worker's memory
MEMORY_SAMPLES = 3  # samples in a row above --max-worker-memory before a replacement
MEMORY_BUDGET = 0.01  # seconds of /proc reading per turn of the master's loop, at most
MIB = 1 << 20

REPLACE = "replace"
KILL = "kill"


@dataclass(frozen=True)
class Action:
    """What the arbiter should do to one worker, why, and the words to log it with."""

    record: WorkerRecord
    kind: str  # REPLACE or KILL
    reason: str  # stats.LIFETIME or stats.MEMORY
    why: str


class MemoryLimits:
    """The memory decision for one sample of one worker, from plain numbers (bytes)."""

    def __init__(self, soft: int = 0, hard: int = 0, samples: int = MEMORY_SAMPLES) -> None:
        self.soft = soft
        self.hard = hard
        self.samples = samples
        self._over: dict[int, int] = {}  # pid -> samples in a row above ``soft``

    def judge(self, pid: int, used: int) -> str:
        """KILL above the hard limit; REPLACE after ``samples`` in a row above
        the soft one; else "". A sample at or below the soft limit starts the count again."""
        if self.soft and used > self.soft:
            self._over[pid] = self._over.get(pid, 0) + 1
        else:
            self._over.pop(pid, None)
        if self.hard and used > self.hard:
            return KILL
        return REPLACE if self.over(pid) >= self.samples else ""

    def over(self, pid: int) -> int:
        return self._over.get(pid, 0)

    def forget(self, live: Iterable[int]) -> None:
        keep = set(live)
        for pid in set(self._over) - keep:
            del self._over[pid]


def lifetime_deadline(started: float, lifetime: float, jitter: float, rng: random.Random) -> float:
    """When a worker started at ``started`` is due for replacement (0: never)."""
    if not lifetime:
        return 0.0
    return started + lifetime + (rng.uniform(0.0, jitter) if jitter else 0.0)


def settled(records: Iterable[WorkerRecord]) -> bool:
    """No worker is booting or waiting for its successor: a lifetime
    replacement may start (they go one at a time, never during a boot)."""
    for record in records:
        if record.retiring or record.killed or record.aborted_at:
            continue
        if not record.ready or record.replace or record.slot.retire_requested():
            return False
    return True


class Recycler:
    """``check`` once per turn of the master's loop; ``next_check`` for its wait."""

    def __init__(self, log: Logger, clock: Callable[[], float] = time.monotonic,
                 read: Callable[[int], tuple[int, str] | None] = worker_memory,
                 rng: random.Random | None = None) -> None:
        self.log = log
        self.clock = clock
        self.read = read
        self.rng = rng or random.Random()
        self.limits = MemoryLimits()
        self._deadlines: dict[int, float] = {}  # pid -> lifetime deadline (0: none, or done)
        self._queue: list[int] = []  # pids still to sample in this round
        self._next_round = 0.0
        self._memory_ok: bool | None = None

    def check(self, cfg: Config, records: Mapping[int, WorkerRecord], generation: int,
              now: float) -> list[Action]:
        for pid in set(self._deadlines) - set(records):
            del self._deadlines[pid]
        self.limits.forget(records)
        actions = self._lifetime(cfg, records.values(), generation, now)
        if (cfg.max_worker_memory or cfg.max_worker_memory_hard) and self._can_read_memory():
            actions += self._memory(cfg, records, now)
        return actions

    def next_check(self, now: float) -> float:
        """The next time ``check`` has something to do (0: nothing scheduled)."""
        due = [d for d in self._deadlines.values() if d > now]
        if self._next_round:
            due.append(now if self._queue else self._next_round)
        return min(due, default=0.0)

    # --- lifetime

    def _lifetime(self, cfg: Config, records: Iterable[WorkerRecord], generation: int,
                  now: float) -> list[Action]:
        lifetime = cfg.max_worker_lifetime
        if not lifetime:
            self._deadlines.clear()  # turned off by a reload: nothing to wake up for
            return []
        records = list(records)
        due = []
        for record in records:
            deadline = self._deadlines.setdefault(record.pid, lifetime_deadline(
                record.started, lifetime, cfg.max_worker_lifetime_jitter, self.rng))
            if deadline and now >= deadline and record.generation == generation:
                due.append(record)
        if not due or not settled(records):
            return []
        oldest = min(due, key=lambda r: self._deadlines[r.pid])
        self._deadlines[oldest.pid] = 0.0
        return [Action(oldest, REPLACE, LIFETIME,
                       f"has lived {now - oldest.started:.1f} s, past --max-worker-lifetime "
                       f"{lifetime:g} s; replacing it")]

    # --- memory

    def _can_read_memory(self) -> bool:
        if self._memory_ok is None:
            self._memory_ok = os.path.exists(f"/proc/{os.getpid()}/statm")
            if not self._memory_ok:
                self.log.warning("--max-worker-memory: this system has no /proc to read the "
                                 "workers' memory from; the limits are ignored")
        return self._memory_ok

    def _memory(self, cfg: Config, records: Mapping[int, WorkerRecord], now: float) -> list[Action]:
        self.limits.soft = cfg.max_worker_memory * MIB
        self.limits.hard = cfg.max_worker_memory_hard * MIB
        if not self._queue:
            if now < self._next_round:
                return []
            self._next_round = now + MEMORY_INTERVAL
            self._queue = [pid for pid, r in records.items() if not r.killed]
        actions = []
        start = self.clock()
        while self._queue and self.clock() - start < MEMORY_BUDGET:
            record = records.get(self._queue.pop())
            if record is None or record.killed:
                continue
            sample = self.read(record.pid)
            if sample is not None:
                action = self._memory_action(cfg, record, *sample)
                if action is not None:
                    actions.append(action)
        return actions

    def _memory_action(self, cfg: Config, record: WorkerRecord, used: int, kind: str) -> Action | None:
        verdict = self.limits.judge(record.pid, used)
        amount = f"uses {used / MIB:.1f} MiB ({kind})"
        if verdict == KILL:
            during = " while it retires" if record.retiring else ""
            return Action(record, KILL, MEMORY,
                          f"{amount}{during}, above --max-worker-memory-hard "
                          f"{cfg.max_worker_memory_hard} MiB; killing it (SIGKILL)")
        if verdict == REPLACE and record.ready and not (record.replace or record.retiring
                                                         or record.aborted_at):
            return Action(record, REPLACE, MEMORY,
                          f"{amount}, above --max-worker-memory {cfg.max_worker_memory} MiB "
                          f"for {self.limits.over(record.pid)} samples in a row; replacing it "
                          "after its current request")
        return None
