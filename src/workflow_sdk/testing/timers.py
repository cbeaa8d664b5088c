"""The local engine's boundary timers: arming, the due-timer sweep, the pending list.

A timer is armed when its step is entered and is live while that step stays
open and its instance runs; a dead one is dropped when it comes up. What a
firing timer does to its instance (ending an interrupting timer's step,
taking the timer's path) is ``flow.py``'s part. Caller holds
``EngineState.lock`` for every method: one lock guards the whole engine.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from workflow_sdk.testing.definitions import BoundaryTimer, Step
from workflow_sdk.testing.records import RUNNING_STATUSES, Instance, OpenStep, now

# The failure reason of a step execution an interrupting timer ended (the
# real engine's exact text; workers compare it).
INTERRUPTED_REASON = "interrupted by boundary timer"

#: What fires a due timer: (instance, open step's history item ID, timer, now).
Fire = Callable[[Instance, str, BoundaryTimer, datetime], None]


class TimerBoard:
    """Armed boundary timers, soonest first."""

    def __init__(self) -> None:
        # Heap of (monotonic due time, seq, instance id, step execution id,
        # timer index) of boundary timers armed when their step was entered;
        # seq keeps timers due at the same moment in the order armed.
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._seq = itertools.count()

    def arm(self, instance_id: str, step: Step, step_execution_id: str) -> None:
        """Arm every timer of ``step``, just entered as ``step_execution_id``."""
        # Due times count from the step's start, on the monotonic clock.
        start = time.monotonic()
        for index, timer in enumerate(step.timers):
            entry = (start + timer.seconds, next(self._seq), instance_id, step_execution_id, index)
            heapq.heappush(self._heap, entry)

    def fire_due(self, instances: Mapping[str, Instance], fire: Fire) -> int:
        """Fire, through ``fire``, every live timer that is due; returns how many.

        Firing one timer may end another's step (dropped then) or arm new
        ones (fired in this sweep too if already due), so the heap is read
        afresh after each."""
        fired = 0
        current = time.monotonic()
        while self._heap and self._heap[0][0] <= current:
            _, _, instance_id, open_id, index = heapq.heappop(self._heap)
            open_step = _live_step(instances, instance_id, open_id)
            if open_step is None:
                continue
            fire(instances[instance_id], open_id, open_step.step.timers[index], now())
            fired += 1
        return fired

    def pending(self, instances: Mapping[str, Instance]) -> list[dict[str, Any]]:
        """Armed timers whose step is still open, soonest first (for tests)."""
        current = time.monotonic()
        out: list[dict[str, Any]] = []
        for due, _, instance_id, open_id, index in sorted(self._heap):
            open_step = _live_step(instances, instance_id, open_id)
            if open_step is None:
                continue
            timer = open_step.step.timers[index]
            out.append(
                {
                    "instanceId": instance_id,
                    "stepId": open_step.step.id,
                    "stepExecutionId": open_id,
                    "duration": timer.duration,
                    "interrupting": timer.interrupting,
                    "targetStepId": timer.target,
                    "dueInSeconds": max(0.0, due - current),
                }
            )
        return out

    def clear(self) -> None:
        self._heap.clear()


def _live_step(
    instances: Mapping[str, Instance], instance_id: str, open_id: str
) -> OpenStep | None:
    """The open step a timer belongs to, or None when the timer is dead: its
    instance is gone or no longer ACTIVE or WAITING, or the step ended."""
    instance = instances.get(instance_id)
    if instance is None or instance.status not in RUNNING_STATUSES:
        return None
    return instance.open_steps.get(open_id)
