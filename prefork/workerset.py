# The supervision decisions, apart from the processes: given the master's
# worker records, the size it wants and a clock reading, what to spawn and
# what to retire, and why. Pure: it sends no signal and forks nothing, so the
# rules are tested with fake records and a fake clock. The arbiter carries
# the plan out. (This holds the maintenance step; the recycling and scaling
# decisions are in recycling.py and scaling.py, in the same style.)
#
# The rule that matters: capacity never drops on purpose. A worker that is
# no longer wanted (an old generation, or one that asked to be replaced) is
# retired only while enough *ready* wanted workers remain to keep the pool at
# its size; one still booting serves nobody, so retiring it costs nothing.
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .stats import MAX_REQUESTS, RELOAD, SCALE_DOWN

if TYPE_CHECKING:
    from .arbiter import WorkerRecord


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


class WorkerSet:
    """``plan`` once per turn of the master's loop."""

    def plan(self, records: Iterable[WorkerRecord], size: int, generation: int, now: float,
             spawn_after: float, boot_slots: Callable[[], int]) -> Plan:
        """Spawn toward ``size`` wanted workers (within the boot slots, after the
        back-off); retire the unwanted as ready replacements take their place,
        and the extra wanted ones when ``size`` fell."""
        current = [r for r in records if live(r)]
        keep = [r for r in current if wanted(r, generation)]
        stale = sorted((r for r in current if not wanted(r, generation)), key=lambda r: r.age)
        plan = Plan()
        missing = size - len(keep)
        if missing > 0 and now >= spawn_after:
            plan.spawn = min(missing, boot_slots())
        ready_kept = sum(1 for r in keep if r.ready)
        ready_stale = [r for r in stale if r.ready]
        spare = max(0, ready_kept + len(ready_stale) - size)
        for record in [r for r in stale if not r.ready] + ready_stale[:spare]:
            plan.retire.append((record, replacement_reason(record)))
        if len(keep) > size:
            extra = sorted(keep, key=lambda r: (r.ready, r.age))[: len(keep) - size]
            plan.retire += [(record, SCALE_DOWN) for record in extra]
        return plan
