"""The worker pool: which workers exist, which should, and which must go.

The pool decides; the arbiter acts. It holds the ``WorkerSlot`` records and
answers with verdicts ("start 2 workers", "retire worker-3", "the reload is
done", "give up: workers cannot boot") but never starts or signals a
process itself, so each decision has a unit test without a fork. It
changes a slot only through the slot's own methods.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

#: Replacements that fail to boot in a row before the supervisor gives up.
MAX_BOOT_FAILURES = 5


class BootVerdict(enum.Enum):
    #: try again on the next tick
    RETRY = "retry"
    #: a reload's new worker cannot start: keep the old ones, stop the reload
    ABORT_RELOAD = "abort_reload"
    #: workers cannot start at all: stop the supervisor
    GIVE_UP = "give_up"


class ReloadStep(enum.Enum):
    #: start one extra ("surge") worker
    START_SURGE = "start_surge"
    #: wait for the surge worker to be ready
    WAIT = "wait"
    #: a surge worker became ready and an old one was retired
    RETIRED = "retired"
    #: every old worker has been replaced
    DONE = "done"


@dataclass(frozen=True)
class RecyclePolicy:
    max_jobs: int = 0
    jitter: float = 0.1
    max_memory_mb: float = 0.0
    #: The memory a worker owns is read in full (USS): until its first full
    #: read, its RSS (the shared pages too) says nothing about it.
    wait_for_uss: bool = False

    def draw_max_jobs(self, rng: random.Random | None = None) -> int:
        """Each worker's own job limit, so that workers do not all restart at once."""
        if self.max_jobs <= 0:
            return 0
        extra = int(self.max_jobs * self.jitter)
        return self.max_jobs + (rng or random).randint(0, extra)


class WorkerPool:
    def __init__(self, target: int, max_boot_failures: int = MAX_BOOT_FAILURES) -> None:
        self.target = target
        self.max_boot_failures = max_boot_failures
        self.slots: dict[int, WorkerSlot] = {}
        self._reload_queue: list[int] = []
        self._ever_booted = False
        self._boot_failures = 0

    # -- questions ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def ever_booted(self) -> bool:
        """Some worker has been ready since the supervisor started."""
        return self._ever_booted

    def capacity(self) -> int:
        """Workers that count towards the pool size (not leaving, not reload extras)."""
        return sum(1 for s in self.slots.values() if not s.retiring and not s.surge)

    def missing(self) -> int:
        """Workers to start to reach the target size."""
        return max(0, self.target - self.capacity())

    def idle(self) -> list[WorkerSlot]:
        return [s for s in self.slots.values() if s.state is SlotState.IDLE and not s.retiring]

    def busy(self) -> int:
        return sum(1 for s in self.slots.values() if s.state is SlotState.BUSY)

    def booted(self) -> int:
        return sum(1 for s in self.slots.values() if s.state is not SlotState.BOOTING)

    def job_types(self, slots: list[WorkerSlot]) -> list[str]:
        types: set[str] = set()
        for slot in slots:
            types |= slot.job_types
        return sorted(types)

    def next_slot_number(self) -> int:
        """The lowest free number: slot numbers name the metric files, so
        reusing them keeps the file count bounded by the pool size."""
        number = 1
        while number in self.slots:
            number += 1
        return number

    def recycle_reason(self, slot: WorkerSlot, policy: RecyclePolicy) -> str | None:
        """Why ``slot`` should be replaced after its current job, if it should."""
        if slot.retiring:
            return None
        if slot.max_jobs and slot.jobs_done >= slot.max_jobs:
            return "recycle_jobs"
        # What it owns (USS and what it grew since), not the pages it shares.
        if policy.wait_for_uss and slot.awaiting_full_read():
            return None
        if policy.max_memory_mb and slot.owned_bytes > policy.max_memory_mb * 2**20:
            return "recycle_memory"
        return None

    def boot_overdue(self, now: float) -> list[WorkerSlot]:
        """Workers still booting past their boot deadline (each returned once)."""
        return [s for s in self.slots.values() if s.boot_overdue(now)]

    def to_trim(self) -> list[WorkerSlot]:
        """Workers to retire so that the pool shrinks to its target (scale down).

        Prefer workers without a job, then the highest slot numbers.
        """
        keep = [s for s in self.slots.values() if not s.retiring and not s.surge]
        keep.sort(key=lambda s: (s.state is SlotState.BUSY, -s.number))
        return keep[: max(0, len(keep) - self.target)]

    # -- changes -----------------------------------------------------------------

    def add(self, slot: WorkerSlot) -> None:
        if slot.number in self.slots:
            raise ValueError(f"slot {slot.number} is taken")
        self.slots[slot.number] = slot

    def remove(self, slot: WorkerSlot) -> None:
        if self.slots.get(slot.number) is slot:
            del self.slots[slot.number]

    def on_ready(self, slot: WorkerSlot, job_types: tuple[str, ...]) -> None:
        slot.booted(job_types)
        self._ever_booted = True
        self._boot_failures = 0

    def on_boot_failure(self, surge: bool) -> BootVerdict:
        if surge:
            self._reload_queue.clear()
            return BootVerdict.ABORT_RELOAD
        self._boot_failures += 1
        if not self._ever_booted or self._boot_failures >= self.max_boot_failures:
            return BootVerdict.GIVE_UP
        return BootVerdict.RETRY

    def scale(self, delta: int) -> int | None:
        """New target size, or None when it cannot change (at least one worker)."""
        target = max(1, self.target + delta)
        if target == self.target:
            return None
        self.target = target
        return target

    def begin_reload(self) -> int:
        """Queue every current worker for replacement; returns how many."""
        self._reload_queue = sorted(self.slots)
        return len(self._reload_queue)

    def abort_reload(self) -> None:
        self._reload_queue.clear()

    def reload_step(self) -> tuple[ReloadStep, WorkerSlot | None]:
        """One extra worker at a time: start it, and once it is ready retire an
        old one, so the pool never has fewer ready workers than before.

        Returns the step and, for RETIRED, the old worker to retire.
        """
        surge = [s for s in self.slots.values() if s.surge]
        if surge:
            fresh = surge[0]
            if fresh.state is SlotState.BOOTING:
                return ReloadStep.WAIT, None
            fresh.join_pool()
            while self._reload_queue:
                old = self.slots.get(self._reload_queue.pop(0))
                if old is not None and not old.retiring:
                    return ReloadStep.RETIRED, old
            return ReloadStep.WAIT, None
        self._reload_queue = [n for n in self._reload_queue if n in self.slots]
        if self._reload_queue:
            return ReloadStep.START_SURGE, None
        if any(s.state is SlotState.BOOTING for s in self.slots.values()):
            return ReloadStep.WAIT, None
        return ReloadStep.DONE, None


__all__ = [
    "MAX_BOOT_FAILURES",
    "BootVerdict",
    "RecyclePolicy",
    "ReloadStep",
    "WorkerPool",
]
