"""The chaos workload: workflows, how each instance is marked, what it must end as.

Three workflows, every service task with ``retryCount`` = ``handlers.RETRIES``:

- ``chaos-chain``: ``a`` (``chaos.a``) then ``b`` (``chaos.b``): two jobs.
- ``chaos-split``: a parallel split into ``chaos.a`` and ``chaos.b``, joined.
- ``chaos-timer``: ``chaos.slow`` under an interrupting boundary timer that
  leads to ``chaos.b``; a slow run is interrupted (the instance goes on along
  the timer's path), a quick one finishes first. COMPLETED either way.

A *mode* marks the instance's ``chaos.a`` job (its first attempt only): see
``MODES``. Some chain instances are cancelled by the run while their first
job runs (``cancel_me``). The planned runs of a job are the runs its mode
explains (two for a first attempt that fails retryable); any other run is an
extra run that an injected fault must explain (``audit``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from chaos.handlers import RETRIES

#: mode -> (the instance's final status, runs of the marked job)
MODES: dict[str, tuple[str, int]] = {
    "ok": ("COMPLETED", 1),
    "flaky": ("COMPLETED", 2),  # a retryable error
    "hang": ("COMPLETED", 2),  # past the job timeout: killed, retried
    "crash": ("COMPLETED", 2),  # the worker exits mid-job
    "leak": ("COMPLETED", 2),  # past max_memory_hard_mb: killed, retried
    "thread": ("COMPLETED", 1),  # leaves a non-daemon thread behind
    "fail": ("FAILED", 1),  # NonRetryableError
    "unser": ("FAILED", 1),  # returns NaN: failed for good
}
#: Share of instances per mode (the rest of the weight is "ok").
MODE_WEIGHTS = {
    "flaky": 0.05,
    "hang": 0.005,
    "crash": 0.01,
    "leak": 0.005,
    "thread": 0.01,
    "fail": 0.02,
    "unser": 0.01,
}
CANCEL_SHARE = 0.03
TIMER_SHARE = 0.10
SPLIT_SHARE = 0.30
LONG_SHARE = 1 / 6
#: Jobs per instance of each workflow, for sizing a run.
JOBS_PER_INSTANCE = {"chaos-chain": 2, "chaos-split": 2, "chaos-timer": 1.5}


def _task(step_id: str, job_type: str, next_step: str, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "name": step_id,
        "type": "SERVICE_TASK",
        "jobType": job_type,
        "retryCount": RETRIES,
        "nextStep": next_step,
        **more,
    }


END = {"id": "end", "name": "End", "type": "END"}

DEFINITIONS: list[dict[str, Any]] = [
    {
        "id": "chaos-chain",
        "name": "chaos chain",
        "steps": [_task("a", "chaos.a", "b"), _task("b", "chaos.b", "end"), END],
    },
    {
        "id": "chaos-split",
        "name": "chaos split",
        "steps": [
            {
                "id": "split",
                "name": "split",
                "type": "PARALLEL_GATEWAY",
                "parallelNextSteps": ["p1", "p2"],
                "joinStep": "join",
            },
            _task("p1", "chaos.a", "join"),
            _task("p2", "chaos.b", "join"),
            {"id": "join", "name": "join", "type": "JOIN_GATEWAY", "nextStep": "end"},
            END,
        ],
    },
    {
        "id": "chaos-timer",
        "name": "chaos timer",
        "steps": [
            _task(
                "slow",
                "chaos.slow",
                "end",
                boundaryEvents=[
                    {
                        "type": "TIMER",
                        "duration": "PT2S",
                        "interrupting": True,
                        "targetStepId": "late",
                    }
                ],
            ),
            _task("late", "chaos.b", "end"),
            END,
        ],
    },
]

JOB_TYPES = ("chaos.a", "chaos.b", "chaos.slow")


@dataclass
class PlannedInstance:
    """One instance to start: its workflow, variables, and what it must end as."""

    index: int
    definition: str
    variables: dict[str, Any]
    mode: str
    cancel: bool = False
    #: Filled in by the run.
    instance_id: str = ""
    started_at: float = 0.0
    #: The cancel's answer: None (not cancelled), True (200), False (refused).
    cancelled: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def expected_status(self, misbehaved: bool = True) -> str:
        """What the instance must end as. ``misbehaved``: the marked job's
        first attempt got as far as its misbehaviour (a fault may kill it
        before: the retry then behaves, and a "fail" instance completes)."""
        if self.cancel and self.cancelled:
            return "CANCELLED"
        if not misbehaved and MODES[self.mode][0] == "FAILED":
            return "COMPLETED"
        return MODES[self.mode][0]


def plan(count: int, rng: random.Random) -> list[PlannedInstance]:
    """``count`` instances drawn from ``rng`` (the run's seed)."""
    modes = list(MODE_WEIGHTS)
    weights = list(MODE_WEIGHTS.values())
    planned: list[PlannedInstance] = []
    for index in range(count):
        roll = rng.random()
        if roll < TIMER_SHARE:
            slow = rng.random() < 0.4
            variables: dict[str, Any] = {"slow_seconds": 30.0 if slow else 0.05}
            planned.append(PlannedInstance(index, "chaos-timer", variables, "ok"))
            continue
        definition = "chaos-split" if roll < TIMER_SHARE + SPLIT_SHARE else "chaos-chain"
        mode = "ok"
        pick = rng.random()
        for name, weight in zip(modes, weights, strict=True):
            if pick < weight:
                mode = name
                break
            pick -= weight
        cancel = definition == "chaos-chain" and mode == "ok" and rng.random() < CANCEL_SHARE
        # Most jobs are quick; one in six takes a second or two, so that
        # workers are often busy when a fault comes.
        long_job = rng.random() < LONG_SHARE
        seconds = rng.uniform(0.5, 2.0) if long_job else rng.uniform(0.005, 0.06)
        variables = {
            "mode": mode,
            "marked": "chaos.a",
            "seconds": round(seconds, 3),
        }
        if cancel:
            variables["cancel_me"] = True
        planned.append(PlannedInstance(index, definition, variables, mode, cancel))
    # Every mode at least once (a small run would draw none of the rare ones).
    chains = [
        p for p in planned if p.definition != "chaos-timer" and p.mode == "ok" and not p.cancel
    ]
    for mode, spare in zip(
        [m for m in MODE_WEIGHTS if all(p.mode != m for p in planned)], chains, strict=False
    ):
        spare.mode = mode
        spare.variables["mode"] = mode
    return planned


def instances_for_jobs(jobs: int) -> int:
    """About how many instances make ``jobs`` jobs."""
    per = 2 * (1 - TIMER_SHARE) + 1.4 * TIMER_SHARE
    return max(1, round(jobs / per))


def planned_runs(instance: PlannedInstance, job_type: str, retries_remaining: int) -> int:
    """Runs the plan explains for one job of ``instance`` (1, or 2 for a
    marked job whose first attempt fails retryable)."""
    if job_type == instance.variables.get("marked"):
        return MODES[instance.mode][1]
    return 1
