"""The records the local engine's state is made of, and their wire forms.

Definitions, instances and jobs as plain dataclasses, the engine's clock and
error type, and the ULID factory history items are named with. Nothing here
takes a lock: the records belong to ``EngineState``, whose one lock guards
every read and write of them (see ``store.py``).
"""

from __future__ import annotations

import base64
import copy
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflow_sdk.testing.definitions import CompiledDefinition, Step

RUNNING_STATUSES = frozenset({"ACTIVE", "WAITING"})
INSTANCE_STATUSES = frozenset({"ACTIVE", "WAITING", "COMPLETED", "FAILED", "CANCELLED"})
_ERROR_CODES = {
    400: "bad-request",
    404: "not-found",
    409: "conflict",
    415: "unsupported-format",
    500: "internal-error",
}


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


class UlidFactory:
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


def count(counters: dict[str, int], name: str, by: int = 1) -> None:
    """Add ``by`` to the counter ``name`` (tests wait on counters, not on time)."""
    counters[name] = counters.get(name, 0) + by
