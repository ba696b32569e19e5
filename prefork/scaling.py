# Adaptive worker count (--workers-max): when to add a worker and when to take
# one away, from what the scoreboard and the listen queues say. Pure: the
# arbiter samples the load, asks ``Scaler.decide`` and carries the answer out
# through its usual paths (a new worker; a retired one, gracefully).
#
# Hysteresis keeps it from flapping: a worker is added only after the pool has
# been saturated (every worker busy, or connections waiting) for
# ``SATURATED_FOR`` seconds in a row, and removed only after it has had at
# least two workers idle and nothing waiting for --scale-down-after seconds in
# a row, so that the pool left after a removal still has one idle worker. Any
# change starts both periods again, and the arbiter holds the scaler (starts
# them again) while a worker boots, so no decision is made within a boot.
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import WorkerRecord

SCALE_INTERVAL = 0.25  # seconds between two looks at the load
SATURATED_FOR = 1.0  # seconds of saturation in a row before a worker is added


@dataclass(frozen=True)
class Load:
    workers: int  # ready workers serving
    busy: int  # workers with every thread in a request
    waiting: int  # connections in the listen queues

    @property
    def saturated(self) -> bool:
        return self.waiting > 0 or (self.workers > 0 and self.busy >= self.workers)

    @property
    def spare(self) -> bool:
        return self.waiting == 0 and self.busy + 1 < self.workers

    def describe(self, seconds: float) -> str:
        return f"{self.busy}/{self.workers} busy, {self.waiting} waiting for {seconds:.1f} s"


class Scaler:
    """``decide`` at every look at the load; ``hold`` while the pool is not settled."""

    def __init__(self) -> None:
        self._saturated_since: float | None = None
        self._spare_since: float | None = None

    def hold(self) -> None:
        self._saturated_since = self._spare_since = None

    def decide(self, now: float, load: Load, current: int, floor: int, ceiling: int,
               scale_down_after: float) -> tuple[int, str]:
        """+1, -1 or 0 workers, and the inputs of that decision in words."""
        self._saturated_since = _since(self._saturated_since, now) if load.saturated else None
        self._spare_since = _since(self._spare_since, now) if load.spare else None
        if self._saturated_since is not None and current < ceiling:
            held = now - self._saturated_since
            if held >= SATURATED_FOR:
                self.hold()
                return 1, load.describe(held)
        if self._spare_since is not None and current > floor:
            held = now - self._spare_since
            if held >= scale_down_after:
                self.hold()
                return -1, load.describe(held)
        return 0, ""


def settled_pool(records: Iterable[WorkerRecord], generation: int,
                 size: int) -> list[WorkerRecord] | None:
    """The live workers of the current generation, if the pool is settled:
    exactly ``size`` of them, every one ready and none waiting for a
    successor. None otherwise: no scaling decision within a boot, a reload
    or a recycling."""
    current = [r for r in records if r.generation == generation
               and not (r.retiring or r.killed or r.aborted_at)]
    if not size or len(current) != size or not all(r.ready and not r.replace for r in current):
        return None
    return current


def load_of(current: list[WorkerRecord], waiting: int) -> Load:
    """What the scoreboard says: a worker is busy when every one of its threads is."""
    busy = sum(1 for r in current if r.slot.busy_threads() >= r.slot.threads)
    return Load(len(current), busy, waiting)


def _since(started: float | None, now: float) -> float:
    return now if started is None else started


def over_budget(total: int, workers: int, budget: int) -> bool:
    """Whether one more worker, the size of the average one, would take the
    workers' ``total`` memory past ``budget`` (bytes; 0: no budget)."""
    if not budget or not workers:
        return False
    return total + total / workers > budget
