"""The threaded Runner's unit tests' stand-ins: a scripted, in-memory engine
client and the helpers that run a Runner against it (test files import
these, never each other's helpers)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from runner_support import run_in_thread
from runner_support import wait_until as poll_until
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner import Runner

WAIT = 5.0  # generous upper bound for anything that should happen "soon"


# -- the fake engine -------------------------------------------------------------


def make_job(
    job_id: str,
    job_type: str = "work",
    *,
    retries: int = 3,
    variables: dict[str, Any] | None = None,
    lease: float = 30.0,
) -> dict[str, Any]:
    locked = datetime.now(timezone.utc)
    return {
        "id": job_id,
        "instanceId": f"inst-{job_id}",
        "stepExecutionId": f"se-{job_id}",
        "jobType": job_type,
        "status": "LOCKED",
        "workerId": "w",
        "lockedAt": locked.isoformat(),
        "lockExpiresAt": (locked + timedelta(seconds=lease)).isoformat(),
        "retriesRemaining": retries,
        "variables": variables or {},
        "createdAt": locked.isoformat(),
    }


class FakeClient:
    """A thread-safe ``WorkerEngineClient`` that records calls and can be scripted.

    ``poll_errors`` / ``complete_errors[job_id]`` / ``fail_errors[job_id]`` are
    queues of exceptions raised by the next calls; ``outage`` makes every poll
    raise ``EngineConnectionError(request_sent=False)`` while set.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.available: deque[dict[str, Any]] = deque()
        self.polls: list[dict[str, Any]] = []
        #: ``lease_seconds`` of every poll, in order (0 = not asked for)
        self.poll_leases: list[int] = []
        self.poll_attempts = 0
        self.completes: list[tuple[str, dict[str, Any]]] = []
        self.complete_attempts: list[str] = []
        self.fails: list[tuple[str, str, bool]] = []
        self.fail_attempts: list[str] = []
        self.poll_errors: deque[Exception] = deque()
        self.complete_errors: dict[str, deque[Exception]] = {}
        self.fail_errors: dict[str, deque[Exception]] = {}
        self.outage = False
        self.per_poll_limit: int | None = None
        self.extra_jobs_per_poll = 0  # misbehave: hand out more than asked
        self.poll_delay = 0.0
        #: called (without the lock) at each poll, returns facts recorded with it
        self.probe: Callable[[], dict[str, Any]] | None = None

    def add(self, *jobs: dict[str, Any]) -> None:
        with self.cond:
            self.available.extend(jobs)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    # WorkerEngineClient -------------------------------------------------------

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1, *, lease_seconds: int = 0
    ) -> list[dict[str, Any]]:
        facts = self.probe() if self.probe is not None else {}
        if self.poll_delay:
            time.sleep(self.poll_delay)  # simulates a slow engine, not synchronisation
        with self.cond:
            self.poll_attempts += 1
            self.poll_leases.append(lease_seconds)
            self.cond.notify_all()
            if self.outage:
                raise EngineConnectionError("connection refused", request_sent=False)
            if self.poll_errors:
                raise self.poll_errors.popleft()
            assert worker_id
            assert job_types
            limit = max_jobs + self.extra_jobs_per_poll
            if self.per_poll_limit is not None:
                limit = min(limit, self.per_poll_limit)
            out = []
            for job in list(self.available):
                if len(out) >= limit:
                    break
                if job["jobType"] in job_types:
                    self.available.remove(job)
                    out.append(dict(job))
            self.polls.append({"max_jobs": max_jobs, "returned": len(out), **facts})
            return out

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        with self.cond:
            self.complete_attempts.append(job_id)
            self.cond.notify_all()
            errors = self.complete_errors.get(job_id)
            if errors:
                raise errors.popleft()
            self.completes.append((job_id, dict(variables or {})))

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        with self.cond:
            self.fail_attempts.append(job_id)
            self.cond.notify_all()
            errors = self.fail_errors.get(job_id)
            if errors:
                raise errors.popleft()
            self.fails.append((job_id, error_message, retryable))

    # helpers ------------------------------------------------------------------

    def reported(self) -> int:
        return len(self.completes) + len(self.fails)


def make_runner(
    client: FakeClient,
    handlers: dict[str, Callable[[dict[str, Any]], Any]],
    metrics: Metrics,
    **kwargs: Any,
) -> Runner:
    registry = HandlerRegistry()
    for job_type, handler in handlers.items():
        registry.register(job_type, handler)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("drain_timeout", 2.0)
    return Runner(client, registry, "test-worker", metrics=metrics, **kwargs)


def running(
    runner: Runner, stop_event: threading.Event | None = None
) -> AbstractContextManager[threading.Thread]:
    """Run ``runner`` in a thread; on exit stop it and join every thread."""
    return run_in_thread(runner, WAIT + runner.drain_timeout, stop_event=stop_event)


#: For conditions not tied to the fake client's condition (runner stats).
wait_until = partial(poll_until, timeout=WAIT, pause=0.005)


class ReadingClient(FakeClient):
    """A FakeClient that can read instances (so the Runner checks staleness)."""

    def __init__(self, status: str = "ACTIVE", error: Exception | None = None) -> None:
        super().__init__()
        self.status = status
        self.error = error
        self.instance_reads = 0

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        with self.cond:
            self.instance_reads += 1
        if self.error is not None:
            raise self.error
        return {"id": instance_id, "status": self.status}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return []


class RenewingClient(FakeClient):
    """A FakeClient with ``extend_lease``, answering from a script (then accepting)."""

    def __init__(self, *answers: dict[str, Any] | Exception | None) -> None:
        super().__init__()
        self.answers: deque[dict[str, Any] | Exception | None] = deque(answers)
        self.renewals: list[tuple[str, str, int]] = []

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        with self.cond:
            self.renewals.append((job_id, worker_id, lease_seconds))
            answer = self.answers.popleft() if self.answers else {"accepted": True}
            self.cond.notify_all()
        if isinstance(answer, Exception):
            raise answer
        return answer
