# What the master knows of one worker: its process, its heartbeat slot and
# what it has been told. The arbiter keeps one per live child; the policy
# modules (workerset.py, recycling.py, scaling.py) read them.
from __future__ import annotations

from dataclasses import dataclass

from .heartbeat import HeartbeatSlot
from .workers.base import Worker


@dataclass
class WorkerRecord:
    pid: int
    worker: Worker
    generation: int
    slot: HeartbeatSlot
    started: float
    ready: bool = False
    retiring: bool = False
    aborted_at: float = 0.0
    killed: bool = False  # the master sent SIGKILL
    boot_timed_out: bool = False  # aborted while loading the application
    # Why the master stops this worker (stats.RESTART_REASONS, SCALE_DOWN, STOP);
    # empty while it has not asked. ``replace`` asks for a replacement first.
    reason: str = ""
    replace: str = ""

    @property
    def age(self) -> int:
        return self.worker.age
