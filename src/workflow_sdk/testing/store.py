"""The local engine's in-memory state and every operation on it.

One re-entrant lock guards everything (``EngineState.lock``); its condition
variable is notified after every change so that test helpers can wait for a
state without sleeping. Methods whose names do not start with ``_`` take the
lock themselves; they take and return plain JSON-shaped values, and raise
``EngineError`` carrying the HTTP status and reason the real engine gives.

Variable maps are never changed in place: a merge builds a new dict. A job's
snapshot and an answer being encoded outside the lock can therefore share
the instance's current dict safely.
"""

from __future__ import annotations

import base64
import copy
import heapq
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from workflow_sdk.testing import expressions
from workflow_sdk.testing.definitions import (
    BoundaryTimer,
    CompiledDefinition,
    DefinitionError,
    Step,
    compile_definition,
    variable_reference,
)

_log = logging.getLogger("workflow_sdk.testing")

RUNNING_STATUSES = frozenset({"ACTIVE", "WAITING"})
INSTANCE_STATUSES = frozenset({"ACTIVE", "WAITING", "COMPLETED", "FAILED", "CANCELLED"})
DEFAULT_MAX_JOBS = 10
DEFAULT_PAGE_SIZE = 20
# Automatic steps (DECISION, TRANSFORMATION, gateways) run inside one call;
# a definition that loops through them only would never return.
MAX_AUTOMATIC_STEPS = 10_000
# Chained instances started by one call (A starts B starts C...).
MAX_CHAINED_STARTS = 1_000
# The failure reason of a step execution an interrupting timer ended (the
# real engine's exact text; workers compare it).
INTERRUPTED_REASON = "interrupted by boundary timer"
# Job states in which a job still belongs to a live step execution.
_LIVE_JOB_STATUSES = frozenset({"PENDING", "LOCKED"})
_ERROR_CODES = {
    400: "bad-request",
    404: "not-found",
    409: "conflict",
    415: "unsupported-format",
    500: "internal-error",
}

T = TypeVar("T")

#: Leases a worker may ask for (``leaseSeconds``; 0 = the engine's default),
#: on engines with lease extension.
LEASE_REQUEST_RANGE = (5, 3600)


class EngineError(Exception):
    """An error answer: HTTP ``status`` with ``{"error": code, "reason": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    @property
    def code(self) -> str:
        return _ERROR_CODES.get(self.status, "internal-error")


# The process's local zone, read once (a fixed offset: an engine running
# across a DST change keeps correct instants with the old offset).
_LOCAL_ZONE = datetime.now().astimezone().tzinfo


def now() -> datetime:
    """The engine's clock: local zone, microseconds, like PostgreSQL's ``now()``."""
    return datetime.now(_LOCAL_ZONE)


def format_time(value: datetime) -> str:
    """RFC 3339 with an explicit offset; the fraction drops trailing zeros."""
    if value.tzinfo is None:
        value = value.astimezone()
    text = value.isoformat(timespec="microseconds")  # ...THH:MM:SS.ffffff+HH:MM
    fraction = text[20:26].rstrip("0")
    return text[:19] + ("." + fraction if fraction else "") + text[26:]


def _time_or_none(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


_TO_CROCKFORD = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


class _UlidFactory:
    """ULIDs that rise strictly, even within one millisecond (caller holds the lock)."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            ms = self._last_ms
            random_part = self._last_random + 1
        else:
            random_part = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
        self._last_ms, self._last_random = ms, random_part
        value = (ms << 80) | random_part
        # 20 bytes give 32 base-32 digits; the last 26 are the 128 bits.
        encoded = base64.b32encode(value.to_bytes(20, "big")).decode("ascii")
        return encoded[6:].translate(_TO_CROCKFORD)


@dataclass(eq=False)
class Definition:
    compiled: CompiledDefinition
    version: int
    uploaded_at: datetime
    canonical: str

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.compiled.id,
            "version": self.version,
            "name": self.compiled.name,
            "uploadedAt": format_time(self.uploaded_at),
        }

    def document(self) -> dict[str, Any]:
        # The stored JSON with the version it was stored as. A shallow copy:
        # the stored document is never changed, and callers only serialise it.
        return {**self.compiled.document, "version": self.version}


@dataclass(eq=False)
class OpenStep:
    """A step an instance is at: a job outstanding, a user task, a WAIT, a join."""

    step: Step
    item: dict[str, Any]  # its history item


@dataclass(eq=False)
class Instance:
    id: str
    definition: Definition
    status: str
    variables: dict[str, Any]
    business_key: str | None
    started_at: datetime
    completed_at: datetime | None = None
    failure_reason: str | None = None
    # By history item ID (= a job's stepExecutionId), in the order entered.
    open_steps: dict[str, OpenStep] = field(default_factory=dict)
    # JOIN_GATEWAY step id -> [branches expected, branches arrived].
    joins: dict[str, list[int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # currentStepIds kept after the instance stopped (failed or cancelled).
    frozen_step_ids: list[str] | None = None

    def current_step_ids(self) -> list[str]:
        if self.frozen_step_ids is not None:
            return list(self.frozen_step_ids)
        return [open_step.step.id for open_step in self.open_steps.values()]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "definitionId": self.definition.compiled.id,
            "definitionVersion": self.definition.version,
            "status": self.status,
            "currentStepIds": self.current_step_ids(),
        }
        if self.variables:
            out["variables"] = self.variables
        out["startedAt"] = format_time(self.started_at)
        if self.completed_at is not None:
            out["completedAt"] = format_time(self.completed_at)
        if self.failure_reason is not None:
            out["failureReason"] = self.failure_reason
        if self.business_key is not None:
            out["businessKey"] = self.business_key
        return out


@dataclass(eq=False)
class Job:
    id: str
    instance_id: str
    step_execution_id: str
    step_id: str
    job_type: str
    retries_remaining: int
    variables: dict[str, Any]  # snapshot taken when the job was created
    created_at: datetime
    seq: int  # creation order: the queue hands out the oldest first
    # PENDING, LOCKED, COMPLETED, FAILED, or CANCELLED (by an interrupting timer)
    status: str = "PENDING"
    worker_id: str | None = None
    locked_at: datetime | None = None
    lock_expires_at: datetime | None = None
    #: claims so far; also tells a stale lease entry from the live one
    deliveries: int = 0
    complete_calls: int = 0
    fail_calls: int = 0
    #: time.monotonic() at which the current lease ends (moved by a heartbeat)
    lease_deadline: float = 0.0
    heartbeats: int = 0

    def wire(self) -> dict[str, Any]:
        """The job as a poll answer carries it: the contract's fields, no stepId."""
        return {
            "id": self.id,
            "instanceId": self.instance_id,
            "stepExecutionId": self.step_execution_id,
            "jobType": self.job_type,
            "status": self.status,
            "workerId": self.worker_id,
            "lockedAt": _time_or_none(self.locked_at),
            "lockExpiresAt": _time_or_none(self.lock_expires_at),
            "retriesRemaining": self.retries_remaining,
            "variables": self.variables,
            "createdAt": format_time(self.created_at),
        }

    def inspect(self) -> dict[str, Any]:
        """Everything the engine knows, for tests (not on the HTTP surface)."""
        out = self.wire()
        out["variables"] = copy.deepcopy(self.variables)
        out["stepId"] = self.step_id
        out["deliveries"] = self.deliveries
        out["completeCalls"] = self.complete_calls
        out["failCalls"] = self.fail_calls
        out["heartbeats"] = self.heartbeats
        return out


def _page(items: list[T], page: int, page_size: int) -> list[T]:
    page = max(page, 0)
    if page_size <= 0:
        page_size = DEFAULT_PAGE_SIZE
    return items[page * page_size : (page + 1) * page_size]


class EngineState:
    """Definitions, instances, jobs and history; safe to call from any thread."""

    #: Lease extension ("Lease extension" in the contract): the heartbeat
    #: route and ``leaseSeconds`` in polls. Off: a released engine.
    heartbeat: bool = False

    def __init__(self, lease_seconds: float = 30.0, complete_delay: float = 0.0) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        if complete_delay < 0:
            raise ValueError(f"complete_delay must be >= 0, got {complete_delay}")
        self.lease_seconds = float(lease_seconds)
        #: Seconds each job completion takes before it is applied and answered
        #: (a loaded database); the HTTP server waits it out, outside the lock.
        self.complete_delay = float(complete_delay)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._ulids = _UlidFactory()
        self._seq = itertools.count()
        self._definitions: dict[str, list[Definition]] = {}
        self._instances: dict[str, Instance] = {}
        self._jobs: dict[str, Job] = {}
        # Per job type, a heap of (seq, job id) of jobs that may be PENDING;
        # entries of jobs that were claimed meanwhile are skipped when popped.
        self._queues: dict[str, list[tuple[int, str]]] = {}
        # Heap of (monotonic deadline, job id, deliveries) of leases to expire.
        self._leases: list[tuple[float, str, int]] = []
        # Heap of (monotonic due time, seq, instance id, step execution id,
        # timer index) of boundary timers armed when their step was entered.
        self._timers: list[tuple[float, int, str, str, int]] = []
        self._chains: deque[tuple[str, dict[str, Any], str]] = deque()
        self.counters: dict[str, int] = {}
        self.chain_errors: list[str] = []
        # Kafka dispatch mode (testing/kafka_dispatch.py): called, under the
        # lock, with each job that becomes claimable (created, or put back by
        # a retryable fail); and the 410 body polls get instead of jobs.
        self.job_listener: Callable[[Job], None] | None = None
        self.poll_gone: dict[str, Any] | None = None

    # -- helpers (caller holds the lock) -------------------------------------

    def _count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def _latest(self, definition_id: str) -> Definition | None:
        versions = self._definitions.get(definition_id)
        return versions[-1] if versions else None

    def _item(self, instance: Instance, step: Step, at: datetime) -> dict[str, Any]:
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

    @staticmethod
    def _end_item(
        item: dict[str, Any], status: str, at: datetime, reason: str | None = None
    ) -> None:
        item["Status"] = status
        item["EndedAt"] = format_time(at)
        if reason is not None:
            item["FailureReason"] = reason

    def _refresh_status(self, instance: Instance) -> None:
        if instance.status not in RUNNING_STATUSES:
            return
        parked = any(o.step.type in ("USER_TASK", "WAIT") for o in instance.open_steps.values())
        instance.status = "WAITING" if parked else "ACTIVE"

    def _fail_instance(
        self, instance: Instance, reason: str, at: datetime, step_id: str | None = None
    ) -> None:
        frozen = instance.current_step_ids()
        if step_id is not None and step_id not in frozen:
            frozen.append(step_id)
        instance.frozen_step_ids = frozen
        instance.status = "FAILED"
        instance.failure_reason = reason
        instance.completed_at = at

    def _complete_instance(self, instance: Instance, at: datetime) -> None:
        for open_step in instance.open_steps.values():
            # Branches still open when an END is reached are abandoned.
            if open_step.item["Status"] == "RUNNING":
                self._end_item(open_step.item, "COMPLETED", at)
        instance.open_steps.clear()
        instance.joins.clear()
        instance.frozen_step_ids = None
        instance.status = "COMPLETED"
        instance.completed_at = at
        next_id = instance.definition.compiled.next_workflow_id
        if next_id:
            self._chains.append((next_id, instance.variables, instance.id))

    def _new_job(self, instance: Instance, step: Step, item: dict[str, Any], at: datetime) -> None:
        seq = next(self._seq)
        job = Job(
            id=str(uuid.uuid4()),
            instance_id=instance.id,
            step_execution_id=item["ID"],
            step_id=step.id,
            job_type=step.job_type or step.id,
            retries_remaining=step.retry_count,
            variables=instance.variables,
            created_at=at,
            seq=seq,
        )
        self._jobs[job.id] = job
        heapq.heappush(self._queues.setdefault(job.job_type, []), (seq, job.id))
        if self.job_listener is not None:
            self.job_listener(job)

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
                self._fail_instance(instance, reason, at, step.id)
                return None
            if matched:
                return condition.target
        reason = f"DecisionNoBranchMatched: no condition of step {step.id!r} is true"
        self._fail_instance(instance, reason, at, step.id)
        return None

    def _advance(self, instance: Instance, step_ids: Iterable[str], at: datetime) -> None:
        """Enter steps, running automatic ones until every path waits or ends."""
        pending = deque(step_ids)
        budget = MAX_AUTOMATIC_STEPS
        while pending and instance.status in RUNNING_STATUSES:
            budget -= 1
            if budget < 0:
                self._fail_instance(
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
                self._new_job(instance, step, item, at)
                self._arm_timers(instance, step, item)
            elif kind in ("USER_TASK", "WAIT"):
                instance.open_steps[item["ID"]] = OpenStep(step, item)
                self._arm_timers(instance, step, item)
            elif kind == "END":
                self._end_item(item, "COMPLETED", at)
                self._complete_instance(instance, at)
            elif kind == "PARALLEL_GATEWAY":
                assert step.join_step is not None  # checked at upload
                self._end_item(item, "COMPLETED", at)
                instance.joins[step.join_step] = [len(step.parallel_next_steps), 0]
                pending.extend(step.parallel_next_steps)
            elif kind == "TRANSFORMATION":
                error = self._transform(instance, step)
                if error is not None:
                    self._end_item(item, "FAILED", at, error)
                    self._fail_instance(instance, error, at, step.id)
                else:
                    self._end_item(item, "COMPLETED", at)
                    pending.append(step.next_step or "")
            elif kind == "DECISION":
                target = self._route(instance, step, at)
                if target is None:
                    self._end_item(item, "FAILED", at, instance.failure_reason)
                else:
                    self._end_item(item, "COMPLETED", at)
                    pending.append(target)
        self._refresh_status(instance)

    def _arm_timers(self, instance: Instance, step: Step, item: dict[str, Any]) -> None:
        # Due times count from the step's start, on the monotonic clock.
        start = time.monotonic()
        for index, timer in enumerate(step.timers):
            entry = (start + timer.seconds, next(self._seq), instance.id, item["ID"], index)
            heapq.heappush(self._timers, entry)

    def _fire_timer(
        self, instance: Instance, open_id: str, timer: BoundaryTimer, at: datetime
    ) -> None:
        """Take a timer's path; an interrupting one first ends its step."""
        if timer.interrupting:
            open_step = instance.open_steps.pop(open_id)
            self._end_item(open_step.item, "FAILED", at, INTERRUPTED_REASON)
            job = self._job_of(open_id) if open_step.step.type == "SERVICE_TASK" else None
            if job is not None and job.status in _LIVE_JOB_STATUSES:
                # Not claimable any more; a worker that holds it is not told.
                job.status = "CANCELLED"
                self._count("jobs_cancelled")
        self._advance(instance, [timer.target], at)

    def _job_of(self, step_execution_id: str) -> Job | None:
        # A scan: only a firing interrupting timer needs it, rarely.
        return next(
            (j for j in self._jobs.values() if j.step_execution_id == step_execution_id), None
        )

    def _arrive_at_join(
        self, instance: Instance, step: Step, at: datetime, pending: deque[str]
    ) -> None:
        state = instance.joins.get(step.id)
        if state is None:
            # Reached without its gateway (a plain path): nothing to wait for.
            item = self._item(instance, step, at)
            self._end_item(item, "COMPLETED", at)
            pending.append(step.next_step or "")
            return
        state[1] += 1
        open_id = next(
            (key for key, o in instance.open_steps.items() if o.step.id == step.id), None
        )
        if open_id is None:
            item = self._item(instance, step, at)
            open_id = item["ID"]
            instance.open_steps[open_id] = OpenStep(step, item)
        if state[1] >= state[0]:
            open_step = instance.open_steps.pop(open_id)
            self._end_item(open_step.item, "COMPLETED", at)
            del instance.joins[step.id]
            pending.append(step.next_step or "")

    def _transform(self, instance: Instance, step: Step) -> str | None:
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

    def _finish_open_step(
        self, instance: Instance, open_id: str, variables: dict[str, Any], at: datetime
    ) -> None:
        open_step = instance.open_steps.pop(open_id)
        if variables:
            instance.variables = {**instance.variables, **variables}
        self._end_item(open_step.item, "COMPLETED", at)
        target = self._route(instance, open_step.step, at)
        if target is not None:
            self._advance(instance, [target], at)
        else:
            self._refresh_status(instance)

    def _drain_chains(self) -> None:
        started = 0
        while self._chains:
            next_id, variables, parent_id = self._chains.popleft()
            definition = self._latest(next_id)
            if definition is None or started >= MAX_CHAINED_STARTS:
                message = f"instance {parent_id} completed but its next workflow {next_id!r} " + (
                    "is not uploaded" if definition is None else "was not started (loop?)"
                )
                _log.warning("local engine: %s", message)
                self.chain_errors.append(message)
                continue
            started += 1
            self._start(definition, variables, None)

    def _start(
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
        self._instances[instance.id] = instance
        self._count("instances_started")
        self._advance(instance, [definition.compiled.entry], at)
        return instance

    # -- definitions ---------------------------------------------------------

    def upload_definition(self, raw: object) -> dict[str, Any]:
        try:
            compiled = compile_definition(raw)
        except DefinitionError as exc:
            raise EngineError(400, str(exc)) from exc
        canonical = compiled.canonical()
        with self.lock:
            versions = self._definitions.setdefault(compiled.id, [])
            for stored in versions:
                if stored.canonical == canonical:
                    return stored.summary()  # identical: idempotent, nothing stored
            definition = Definition(compiled, len(versions) + 1, now(), canonical)
            versions.append(definition)
            self.changed.notify_all()
            return definition.summary()

    def get_definition(self, definition_id: str, version: int | None = None) -> dict[str, Any]:
        with self.lock:
            versions = self._definitions.get(definition_id) or []
            if version is None:
                found = versions[-1] if versions else None
            else:
                found = versions[version - 1] if 1 <= version <= len(versions) else None
            if found is None:
                what = "" if version is None else f" version {version}"
                raise EngineError(404, f"definition {definition_id!r}{what} not found")
            return found.document()

    def list_definitions(self, keyword: str, page: int, page_size: int) -> dict[str, Any]:
        needle = keyword.lower()
        with self.lock:
            latest = [versions[-1] for _, versions in sorted(self._definitions.items())]
            matching = [
                d
                for d in latest
                if needle in d.compiled.id.lower() or needle in d.compiled.name.lower()
            ]
            items = [d.summary() for d in _page(matching, page, page_size)]
            return {"items": items or None, "total": len(matching)}

    # -- instances -----------------------------------------------------------

    def start_instance(
        self,
        definition_id: str,
        version: int | None,
        variables: dict[str, Any],
        business_key: str | None,
    ) -> dict[str, Any]:
        with self.lock:
            versions = self._definitions.get(definition_id) or []
            if version:
                definition = versions[version - 1] if 1 <= version <= len(versions) else None
            else:
                definition = versions[-1] if versions else None
            if definition is None:
                what = f" version {version}" if version else ""
                raise EngineError(
                    500,
                    f"start instance: get definition {definition_id!r}{what}: definition not found",
                )
            instance = self._start(definition, variables, business_key)
            self._drain_chains()
            self.changed.notify_all()
            return instance.summary()

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise EngineError(404, f"instance {instance_id!r} not found")
            return instance.summary()

    def list_instances(
        self,
        definition_id: str,
        status: str,
        business_key: str,
        page: int,
        page_size: int,
    ) -> dict[str, Any]:
        with self.lock:
            matching = [
                i
                for i in self._instances.values()
                if (not definition_id or i.definition.compiled.id == definition_id)
                and (not status or i.status == status)
                and (not business_key or i.business_key == business_key)
            ]
            matching.sort(key=lambda i: i.started_at, reverse=True)  # newest first
            items = [i.summary() for i in _page(matching, page, page_size)]
            return {"items": items or None, "total": len(matching)}

    def history(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._instances.get(instance_id)
            items = [dict(item) for item in instance.history] if instance else []
            return {"items": items or None}

    def cancel_instance(self, instance_id: str, reason: str) -> dict[str, Any]:
        # Only the instance changes, as on the real engine: its jobs stay as
        # they are (claimable, or LOCKED by a worker that is not told) and
        # their step executions stay RUNNING in the history.
        with self.lock:
            instance = self._instances.get(instance_id)
            if instance is None or instance.status not in RUNNING_STATUSES:
                raise EngineError(500, "cancel: no rows in result set")
            instance.frozen_step_ids = instance.current_step_ids()
            instance.status = "CANCELLED"
            instance.failure_reason = reason
            self._count("instances_cancelled")
            self.changed.notify_all()
            answer = instance.summary()
            # The real engine's cancel answer carries neither of these.
            answer.pop("completedAt", None)
            answer.pop("businessKey", None)
            return answer

    def complete_user_task(self, instance_id: str, step_id: str, variables: dict[str, Any]) -> None:
        # The engine answers 404 for an unknown step or no open task here.
        self._resume(
            instance_id,
            step_id,
            variables,
            "USER_TASK",
            missing=404,
            counter="user_tasks_completed",
        )

    def signal(self, instance_id: str, step_id: str, variables: dict[str, Any]) -> None:
        # ...and 409 for the same two cases of a signal.
        self._resume(instance_id, step_id, variables, "WAIT", missing=409, counter="signals")

    def _resume(
        self,
        instance_id: str,
        step_id: str,
        variables: dict[str, Any],
        step_type: str,
        *,
        missing: int,
        counter: str,
    ) -> None:
        """Move an instance on from the USER_TASK or WAIT step it is parked at."""
        with self.lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise EngineError(404, f"instance {instance_id!r} not found")
            step = instance.definition.compiled.steps.get(step_id)
            if step is None:
                raise EngineError(missing, f"step {step_id!r} not found in the definition")
            if step.type != step_type:
                raise EngineError(400, f"step {step_id!r} is a {step.type}, not a {step_type}")
            if instance.status not in RUNNING_STATUSES:
                raise EngineError(409, f"instance {instance_id!r} is {instance.status}")
            open_id = next(
                (k for k, o in instance.open_steps.items() if o.step.id == step_id), None
            )
            if open_id is None:
                raise EngineError(missing, f"instance is not parked at step {step_id!r}")
            self._finish_open_step(instance, open_id, variables, now())
            self._count(counter)
            self._drain_chains()
            self.changed.notify_all()

    # -- jobs ----------------------------------------------------------------

    def poll(
        self, worker_id: str, job_types: list[str], max_jobs: int, lease_seconds: float = 0
    ) -> dict[str, Any]:
        if max_jobs <= 0:
            max_jobs = DEFAULT_MAX_JOBS
        length = lease_seconds or self.lease_seconds
        with self.lock:
            self._count("polls")
            at = now()
            expires = at + timedelta(seconds=length)
            deadline = time.monotonic() + length
            queues = [q for q in (self._queues.get(t) for t in dict.fromkeys(job_types)) if q]
            claimed: list[dict[str, Any]] = []
            while len(claimed) < max_jobs and queues:
                # The oldest job over all the requested types.
                queue = min(queues, key=lambda q: q[0][0])
                _, job_id = heapq.heappop(queue)
                if not queue:
                    queues.remove(queue)
                job = self._jobs[job_id]
                if job.status != "PENDING":
                    continue  # a stale entry: claimed or finished since it was queued
                job.status = "LOCKED"
                job.worker_id = worker_id
                job.locked_at = at
                job.lock_expires_at = expires
                job.deliveries += 1
                job.lease_deadline = deadline
                heapq.heappush(self._leases, (deadline, job.id, job.deliveries))
                claimed.append(job.wire())
            if not claimed:
                self._count("empty_polls")
            else:
                self._count("jobs_delivered", len(claimed))
                self.changed.notify_all()
            return {"jobs": claimed or None}

    def _requeue(self, job: Job) -> None:
        job.status = "PENDING"
        job.worker_id = None
        job.locked_at = None
        job.lock_expires_at = None
        # Same seq (its old createdAt): it is handed out before newer jobs.
        heapq.heappush(self._queues.setdefault(job.job_type, []), (job.seq, job.id))
        if self.job_listener is not None:
            self.job_listener(job)

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise EngineError(500, f'job "{job_id}" not found')
        return job

    def wait_complete_delay(self, interrupt: threading.Event) -> bool:
        """Wait ``complete_delay`` seconds before a completion is applied, as a
        loaded database would, without the lock (other requests go on).
        Returns False when ``interrupt`` is set meanwhile (the server stops)."""
        delay = self.complete_delay
        if delay <= 0:
            return True
        with self.lock:
            self._count("completes_delayed")  # tests wait for this, not for time
            self.changed.notify_all()
        return not interrupt.wait(delay)

    def complete_job(self, job_id: str, variables: dict[str, Any]) -> None:
        with self.lock:
            job = self._job(job_id)
            job.complete_calls += 1
            self._count("complete_calls")
            if job.status in ("COMPLETED", "CANCELLED"):
                return  # idempotent; a job a timer cancelled stays cancelled
            was_failed = job.status == "FAILED"
            job.status = "COMPLETED"
            self._count("jobs_completed")
            instance = self._instances[job.instance_id]
            at = now()
            if instance.status in RUNNING_STATUSES and job.step_execution_id in instance.open_steps:
                self._finish_open_step(instance, job.step_execution_id, variables, at)
                self._drain_chains()
            elif was_failed:
                # The contract: completing a FAILED job marks it and its step
                # COMPLETED; the instance stays as it is.
                for item in instance.history:
                    if item["ID"] == job.step_execution_id:
                        self._end_item(item, "COMPLETED", at)
                        item["FailureReason"] = None
            self.changed.notify_all()

    def fail_job(self, job_id: str, error_message: str, retryable: bool) -> None:
        with self.lock:
            job = self._job(job_id)
            job.fail_calls += 1
            self._count("fail_calls")
            # Like the real engine, neither the worker nor the job's state is
            # checked: a fail after a completion still acts (see the contract).
            if retryable and job.retries_remaining > 0:
                job.retries_remaining -= 1
                self._requeue(job)
                self._count("jobs_retried")
                self.changed.notify_all()
                return
            job.status = "FAILED"
            self._count("jobs_failed")
            instance = self._instances[job.instance_id]
            at = now()
            open_step = instance.open_steps.pop(job.step_execution_id, None)
            item = (
                open_step.item
                if open_step
                else next((i for i in instance.history if i["ID"] == job.step_execution_id), None)
            )
            if item is not None:
                self._end_item(item, "FAILED", at, error_message)
            self._fail_instance(instance, error_message, at, job.step_id)
            self.changed.notify_all()

    def heartbeat_job(self, job_id: str, worker_id: str, lease_seconds: int) -> dict[str, Any]:
        """Extend a job's lease by ``lease_seconds`` (0: the engine's) from now.

        409 when the lease is lost: unknown or finished job, another worker
        holds it, or its lease has passed (swept or not yet)."""
        length = lease_seconds or self.lease_seconds
        with self.lock:
            job = self._jobs.get(job_id)
            current = time.monotonic()
            if job is None:
                why = "job not found"
            elif job.status != "LOCKED":
                why = f"job is {job.status}"
            elif job.worker_id != worker_id:
                why = "another worker holds the job"
            elif current >= job.lease_deadline:
                why = "the lease has expired"
            else:
                job.heartbeats += 1
                job.lease_deadline = current + length
                job.lock_expires_at = now() + timedelta(seconds=length)
                heapq.heappush(self._leases, (job.lease_deadline, job.id, job.deliveries))
                self._count("heartbeats")
                self.changed.notify_all()
                return {"accepted": True, "lockExpiresAt": format_time(job.lock_expires_at)}
            self._count("heartbeats_refused")
            self.changed.notify_all()
            raise EngineError(409, f"lease lost: {why}")

    def revoke_lease(self, job_id: str) -> None:
        """Put a LOCKED job back in the queue now, as if its lease had passed."""
        with self.lock:
            job = self._job(job_id)
            if job.status != "LOCKED":
                raise ValueError(f"job {job_id} is {job.status}, not LOCKED")
            self._requeue(job)
            self._count("leases_expired")
            self.changed.notify_all()

    def expire_leases(self) -> int:
        """Put jobs whose lease has passed back in the queue; returns how many."""
        expired = 0
        with self.lock:
            current = time.monotonic()
            while self._leases and self._leases[0][0] <= current:
                _, job_id, claim = heapq.heappop(self._leases)
                job = self._jobs.get(job_id)
                if job is None or job.status != "LOCKED" or job.deliveries != claim:
                    continue  # finished or claimed again since
                if job.lease_deadline > current:
                    continue  # extended by a heartbeat: a later entry stands for it
                self._requeue(job)  # retriesRemaining unchanged
                expired += 1
            if expired:
                self._count("leases_expired", expired)
                self.changed.notify_all()
        return expired

    def fire_timers(self) -> int:
        """Fire the boundary timers that are due; returns how many fired.

        A timer whose step has ended, or whose instance is no longer ACTIVE or
        WAITING, is dropped. Like the real engine's timer sweeper, this runs
        every so often, so a timer fires up to one interval after it is due.
        """
        fired = 0
        with self.lock:
            current = time.monotonic()
            while self._timers and self._timers[0][0] <= current:
                _, _, instance_id, open_id, index = heapq.heappop(self._timers)
                instance = self._instances.get(instance_id)
                if instance is None or instance.status not in RUNNING_STATUSES:
                    continue
                open_step = instance.open_steps.get(open_id)
                if open_step is None:
                    continue  # the step ended before its timer
                self._fire_timer(instance, open_id, open_step.step.timers[index], now())
                fired += 1
            if fired:
                self._count("timers_fired", fired)
                self._drain_chains()
                self.changed.notify_all()
        return fired

    def pending_timers(self) -> list[dict[str, Any]]:
        """Armed timers whose step is still open, soonest first (for tests)."""
        with self.lock:
            current = time.monotonic()
            out: list[dict[str, Any]] = []
            for due, _, instance_id, open_id, index in sorted(self._timers):
                instance = self._instances.get(instance_id)
                if instance is None or instance.status not in RUNNING_STATUSES:
                    continue
                open_step = instance.open_steps.get(open_id)
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

    # -- inspection (tests only; not on the HTTP surface) --------------------

    def inspect_instance(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise KeyError(f"no instance {instance_id!r}")
            return copy.deepcopy(instance.summary())

    def inspect_instances(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(i.summary()) for i in self._instances.values()]

    def inspect_history(self, instance_id: str) -> list[dict[str, Any]]:
        with self.lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise KeyError(f"no instance {instance_id!r}")
            return [dict(item) for item in instance.history]

    def inspect_jobs(
        self,
        status: str | None = None,
        job_type: str | None = None,
        instance_id: str | None = None,
    ) -> list[dict[str, Any]]:
        with self.lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.seq)
            return [
                j.inspect()
                for j in jobs
                if (status is None or j.status == status)
                and (job_type is None or j.job_type == job_type)
                and (instance_id is None or j.instance_id == instance_id)
            ]

    def inspect_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(f"no job {job_id!r}")
            return job.inspect()

    def wait_until(self, predicate: Callable[[], T | None], timeout: float) -> T | None:
        """Wait for ``predicate()`` (called under the lock) to return something
        truthy; returns it, or the last falsy value when ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                result = predicate()
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result
                self.changed.wait(remaining)

    def reset(self) -> None:
        """Forget every definition, instance and job."""
        with self.lock:
            self._definitions.clear()
            self._instances.clear()
            self._jobs.clear()
            self._queues.clear()
            self._leases.clear()
            self._timers.clear()
            self._chains.clear()
            self.counters.clear()
            self.chain_errors.clear()
            self.changed.notify_all()


__all__ = ["LEASE_REQUEST_RANGE", "EngineError", "EngineState", "format_time", "now"]
