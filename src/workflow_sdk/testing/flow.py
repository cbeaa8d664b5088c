"""How the local engine's instances move: starting, routing, advancing, ending.

Entering a step writes its history item and, by its type, creates a job
(``jobs.py``), arms its boundary timers (``timers.py``), parks the instance,
or runs at once (gateways, DECISION, TRANSFORMATION, END). Caller holds
``EngineState.lock`` for every method: one lock guards the whole engine, so
an instance, its jobs and its timers are always seen in step.

Variable maps are never changed in place: a merge builds a new dict (a job's
snapshot and an answer encoded outside the lock may share the current one).
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from workflow_sdk.testing import expressions
from workflow_sdk.testing.definitions import BoundaryTimer, Step, variable_reference
from workflow_sdk.testing.jobs import JobBoard
from workflow_sdk.testing.records import (
    RUNNING_STATUSES,
    Definition,
    Instance,
    Job,
    OpenStep,
    UlidFactory,
    count,
    format_time,
    now,
)
from workflow_sdk.testing.timers import INTERRUPTED_REASON, TimerBoard

_log = logging.getLogger("workflow_sdk.testing")

# Automatic steps (DECISION, TRANSFORMATION, gateways) run inside one call;
# a definition that loops through them only would never return.
MAX_AUTOMATIC_STEPS = 10_000
# Chained instances started by one call (A starts B starts C...).
MAX_CHAINED_STARTS = 1_000


class Flow:
    """Every instance, and the moves that change one."""

    def __init__(
        self,
        jobs: JobBoard,
        timers: TimerBoard,
        latest: Callable[[str], Definition | None],
        counters: dict[str, int],
        chain_errors: list[str],
    ) -> None:
        self.instances: dict[str, Instance] = {}
        self._jobs = jobs
        self._timers = timers
        self._latest = latest  # a definition's latest version (chained starts)
        self._counters = counters
        self._chain_errors = chain_errors
        self._ulids = UlidFactory()
        # (next definition id, variables, parent instance id) of instances
        # whose completion asks for another; started by ``drain_chains``.
        self._chains: deque[tuple[str, dict[str, Any], str]] = deque()

    # -- starting and chaining -----------------------------------------------

    def start(
        self, definition: Definition, variables: dict[str, Any], business_key: str | None
    ) -> Instance:
        at = now()
        instance = Instance(
            id=str(uuid.uuid4()),
            definition=definition,
            status="ACTIVE",
            variables=dict(variables),
            business_key=business_key,
            started_at=at,
        )
        self.instances[instance.id] = instance
        count(self._counters, "instances_started")
        self._advance(instance, [definition.compiled.entry], at)
        return instance

    def drain_chains(self) -> None:
        """Start the next workflows of the instances that completed meanwhile."""
        started = 0
        while self._chains:
            next_id, variables, parent_id = self._chains.popleft()
            definition = self._latest(next_id)
            if definition is None or started >= MAX_CHAINED_STARTS:
                message = f"instance {parent_id} completed but its next workflow {next_id!r} " + (
                    "is not uploaded" if definition is None else "was not started (loop?)"
                )
                _log.warning("local engine: %s", message)
                self._chain_errors.append(message)
                continue
            started += 1
            self.start(definition, variables, None)

    # -- moves from outside (a job's end, a task, a signal, a timer, a cancel) --

    def finish_open_step(
        self, instance: Instance, open_id: str, variables: dict[str, Any], at: datetime
    ) -> None:
        """Complete the open step ``open_id`` with ``variables`` and move on."""
        open_step = instance.open_steps.pop(open_id)
        if variables:
            instance.variables = {**instance.variables, **variables}
        _end_item(open_step.item, "COMPLETED", at)
        target = self._route(instance, open_step.step, at)
        if target is not None:
            self._advance(instance, [target], at)
        else:
            _refresh_status(instance)

    def job_completed(self, job: Job, variables: dict[str, Any], was_failed: bool) -> None:
        """What a job's completion does to its instance (the job is COMPLETED)."""
        instance = self.instances[job.instance_id]
        at = now()
        if instance.status in RUNNING_STATUSES and job.step_execution_id in instance.open_steps:
            self.finish_open_step(instance, job.step_execution_id, variables, at)
            self.drain_chains()
            return
        # The contract: completing a FAILED job, or the job of a cancelled or
        # finished instance, marks the job and its step execution COMPLETED;
        # the instance and its variables stay as they are.
        instance.open_steps.pop(job.step_execution_id, None)
        for item in instance.history:
            if item["ID"] == job.step_execution_id and (was_failed or item["Status"] == "RUNNING"):
                _end_item(item, "COMPLETED", at)
                item["FailureReason"] = None

    def job_failed(self, job: Job, error_message: str) -> None:
        """What a job's final failure does to its instance: it fails too."""
        instance = self.instances[job.instance_id]
        at = now()
        open_step = instance.open_steps.pop(job.step_execution_id, None)
        item = (
            open_step.item
            if open_step
            else next((i for i in instance.history if i["ID"] == job.step_execution_id), None)
        )
        if item is not None:
            _end_item(item, "FAILED", at, error_message)
        _fail_instance(instance, error_message, at, job.step_id)

    def fire_timer(
        self, instance: Instance, open_id: str, timer: BoundaryTimer, at: datetime
    ) -> None:
        """Take a timer's path; an interrupting one first ends its step."""
        if timer.interrupting:
            open_step = instance.open_steps.pop(open_id)
            _end_item(open_step.item, "FAILED", at, INTERRUPTED_REASON)
            if open_step.step.type == "SERVICE_TASK" and self._jobs.cancel_step_job(open_id):
                count(self._counters, "jobs_cancelled")
        self._advance(instance, [timer.target], at)

    @staticmethod
    def cancel(instance: Instance, reason: str) -> None:
        # Only the instance changes, as on the real engine: its jobs stay as
        # they are (claimable, or LOCKED by a worker that is not told) and
        # their step executions stay RUNNING in the history (until a job's
        # complete marks it and its step COMPLETED: ``job_completed``).
        instance.frozen_step_ids = instance.current_step_ids()
        instance.status = "CANCELLED"
        instance.failure_reason = reason

    def clear(self) -> None:
        self.instances.clear()
        self._chains.clear()

    # -- advancing -----------------------------------------------------------

    def _advance(self, instance: Instance, step_ids: Iterable[str], at: datetime) -> None:
        """Enter steps, running automatic ones until every path waits or ends."""
        pending = deque(step_ids)
        budget = MAX_AUTOMATIC_STEPS
        while pending and instance.status in RUNNING_STATUSES:
            budget -= 1
            if budget < 0:
                _fail_instance(
                    instance,
                    f"the local engine ran {MAX_AUTOMATIC_STEPS} automatic steps in a row: "
                    "the definition loops without a task",
                    at,
                )
                break
            step = instance.definition.compiled.steps[pending.popleft()]
            kind = step.type
            if kind == "JOIN_GATEWAY":
                self._arrive_at_join(instance, step, at, pending)
                continue
            item = self._item(instance, step, at)
            if kind == "SERVICE_TASK":
                instance.open_steps[item["ID"]] = OpenStep(step, item)
                self._jobs.create(instance, step, item, at)
                self._timers.arm(instance.id, step, item["ID"])
            elif kind in ("USER_TASK", "WAIT"):
                instance.open_steps[item["ID"]] = OpenStep(step, item)
                self._timers.arm(instance.id, step, item["ID"])
            elif kind == "END":
                _end_item(item, "COMPLETED", at)
                self._complete_instance(instance, at)
            elif kind == "PARALLEL_GATEWAY":
                assert step.join_step is not None  # checked at upload
                _end_item(item, "COMPLETED", at)
                instance.joins[step.join_step] = [len(step.parallel_next_steps), 0]
                pending.extend(step.parallel_next_steps)
            elif kind == "TRANSFORMATION":
                error = _transform(instance, step)
                if error is not None:
                    _end_item(item, "FAILED", at, error)
                    _fail_instance(instance, error, at, step.id)
                else:
                    _end_item(item, "COMPLETED", at)
                    pending.append(step.next_step or "")
            elif kind == "DECISION":
                target = self._route(instance, step, at)
                if target is None:
                    _end_item(item, "FAILED", at, instance.failure_reason)
                else:
                    _end_item(item, "COMPLETED", at)
                    pending.append(target)
        _refresh_status(instance)

    def _item(self, instance: Instance, step: Step, at: datetime) -> dict[str, Any]:
        """A RUNNING history item for entering ``step``, appended to the history."""
        item: dict[str, Any] = {
            "ID": self._ulids.new(),
            "InstanceID": instance.id,
            "StepID": step.id,
            "StepType": step.type,
            "AttemptNumber": 1,
            "Status": "RUNNING",
            "StartedAt": format_time(at),
            "EndedAt": None,
            "InputSnapshot": None,
            "OutputSnapshot": None,
            "FailureReason": None,
        }
        instance.history.append(item)
        return item

    def _route(self, instance: Instance, step: Step, at: datetime) -> str | None:
        """Where a finished step leads; fails the instance and returns None if nowhere."""
        if step.next_step:
            return step.next_step
        if not step.conditions:
            return None  # a dead end: the contract's "ACTIVE for ever"
        for condition in step.conditions:  # definition order (the real engine: any order)
            try:
                matched = expressions.evaluate_condition(condition.node, instance.variables)
            except expressions.ExpressionError as exc:
                reason = (
                    f"DecisionEvaluationFailed: step {step.id!r}: "
                    f"condition {condition.source!r}: {exc}"
                )
                _fail_instance(instance, reason, at, step.id)
                return None
            if matched:
                return condition.target
        reason = f"DecisionNoBranchMatched: no condition of step {step.id!r} is true"
        _fail_instance(instance, reason, at, step.id)
        return None

    def _arrive_at_join(
        self, instance: Instance, step: Step, at: datetime, pending: deque[str]
    ) -> None:
        state = instance.joins.get(step.id)
        if state is None:
            # Reached without its gateway (a plain path): nothing to wait for.
            item = self._item(instance, step, at)
            _end_item(item, "COMPLETED", at)
            pending.append(step.next_step or "")
            return
        state[1] += 1
        open_id = open_step_at(instance, step.id)
        if open_id is None:
            item = self._item(instance, step, at)
            open_id = item["ID"]
            instance.open_steps[open_id] = OpenStep(step, item)
        if state[1] >= state[0]:
            open_step = instance.open_steps.pop(open_id)
            _end_item(open_step.item, "COMPLETED", at)
            del instance.joins[step.id]
            pending.append(step.next_step or "")

    def _complete_instance(self, instance: Instance, at: datetime) -> None:
        for open_step in instance.open_steps.values():
            # Branches still open when an END is reached are abandoned.
            if open_step.item["Status"] == "RUNNING":
                _end_item(open_step.item, "COMPLETED", at)
        instance.open_steps.clear()
        instance.joins.clear()
        instance.frozen_step_ids = None
        instance.status = "COMPLETED"
        instance.completed_at = at
        next_id = instance.definition.compiled.next_workflow_id
        if next_id:
            self._chains.append((next_id, instance.variables, instance.id))


def open_step_at(instance: Instance, step_id: str) -> str | None:
    """The history item ID of the open execution of ``step_id``, if any."""
    return next((key for key, o in instance.open_steps.items() if o.step.id == step_id), None)


def _end_item(item: dict[str, Any], status: str, at: datetime, reason: str | None = None) -> None:
    item["Status"] = status
    item["EndedAt"] = format_time(at)
    if reason is not None:
        item["FailureReason"] = reason


def _refresh_status(instance: Instance) -> None:
    if instance.status not in RUNNING_STATUSES:
        return
    parked = any(o.step.type in ("USER_TASK", "WAIT") for o in instance.open_steps.values())
    instance.status = "WAITING" if parked else "ACTIVE"


def _fail_instance(
    instance: Instance, reason: str, at: datetime, step_id: str | None = None
) -> None:
    frozen = instance.current_step_ids()
    if step_id is not None and step_id not in frozen:
        frozen.append(step_id)
    instance.frozen_step_ids = frozen
    instance.status = "FAILED"
    instance.failure_reason = reason
    instance.completed_at = at


def _transform(instance: Instance, step: Step) -> str | None:
    """Apply a TRANSFORMATION; returns a failure reason, or None."""
    results: dict[str, Any] = {}
    for key, value in step.transformations:
        name = variable_reference(value)
        if name is None:
            results[key] = copy.deepcopy(value)
        elif name in instance.variables:
            results[key] = instance.variables[name]
        else:
            return (
                f"TransformationFailed: step {step.id!r}: {key!r} refers to "
                f"undefined variable {name!r}"
            )
    instance.variables = {**instance.variables, **results}
    return None
