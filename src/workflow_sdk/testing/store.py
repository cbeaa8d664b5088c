"""The local engine's in-memory state: the public operations, under one lock.

``EngineState`` composes the parts that hold the state (``catalog.py``:
definitions; ``flow.py``: instances and how they move; ``jobs.py``: the job
queue, leases and heartbeats; ``timers.py``: boundary timers) and is the only
way in. One re-entrant lock guards everything (``EngineState.lock``), the
parts included: a move crosses them (a job's completion advances its
instance, which creates jobs and arms timers) and must be seen whole. Its
condition variable is notified after every change so that test helpers can
wait for a state without sleeping. Methods whose names do not start with
``_`` take the lock themselves; they take and return plain JSON-shaped
values, and raise ``EngineError`` carrying the HTTP status and reason the
real engine gives.

Variable maps are never changed in place: a merge builds a new dict. A job's
snapshot and an answer being encoded outside the lock can therefore share
the instance's current dict safely.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from workflow_sdk.testing.catalog import Catalog
from workflow_sdk.testing.definitions import DefinitionError, compile_definition
from workflow_sdk.testing.flow import MAX_AUTOMATIC_STEPS, MAX_CHAINED_STARTS, Flow, open_step_at
from workflow_sdk.testing.jobs import JobBoard
from workflow_sdk.testing.records import (
    INSTANCE_STATUSES,
    RUNNING_STATUSES,
    Definition,
    EngineError,
    Instance,
    Job,
    OpenStep,
    count,
    format_time,
    now,
)
from workflow_sdk.testing.timers import INTERRUPTED_REASON, TimerBoard

DEFAULT_MAX_JOBS = 10
DEFAULT_PAGE_SIZE = 20

T = TypeVar("T")

#: Leases a worker may ask for (``leaseSeconds``; 0 = the engine's default),
#: on engines with lease extension.
LEASE_REQUEST_RANGE = (5, 3600)


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
        #: Seconds each fail's answer is held after the fail is applied (the
        #: engine has acted, the worker has not heard yet); outside the lock.
        self.fail_answer_delay = 0.0
        #: job id -> complete or fail requests of it being handled now
        self._reports_in_progress: dict[str, int] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        # Both shared with the flow (it counts starts and cancelled jobs, and
        # notes chains it cannot start): cleared in place, never replaced.
        self.counters: dict[str, int] = {}
        self.chain_errors: list[str] = []
        self._catalog = Catalog()
        self._jobs = JobBoard()
        self._timers = TimerBoard()
        self._flow = Flow(
            self._jobs, self._timers, self._catalog.find, self.counters, self.chain_errors
        )
        # Kafka dispatch mode (testing/kafka_dispatch.py): the 410 body polls
        # get instead of jobs (``job_listener`` is the other half).
        self.poll_gone: dict[str, Any] | None = None
        #: Raw items the next poll answer that claims a job carries too
        #: (``LocalEngine.add_to_next_poll``).
        self.poll_extras: list[Any] = []
        #: Route name -> injected error answers still to give, oldest first
        #: (``LocalEngine.fail_next``): (status, after the change or instead).
        self.error_bursts: dict[str, list[tuple[int, bool]]] = {}

    @property
    def job_listener(self) -> Callable[[Job], None] | None:
        """Kafka dispatch mode: called, under the lock, with each job that
        becomes claimable (created, or put back by a retryable fail)."""
        return self._jobs.listener

    @job_listener.setter
    def job_listener(self, listener: Callable[[Job], None] | None) -> None:
        self._jobs.listener = listener

    def _count(self, name: str, by: int = 1) -> None:
        count(self.counters, name, by)

    # -- definitions ---------------------------------------------------------

    def upload_definition(self, raw: object) -> dict[str, Any]:
        # Compiled outside the lock: other requests go on meanwhile.
        try:
            compiled = compile_definition(raw)
        except DefinitionError as exc:
            raise EngineError(400, str(exc)) from exc
        canonical = compiled.canonical()
        with self.lock:
            definition, stored = self._catalog.add(compiled, canonical)
            if stored:
                self.changed.notify_all()
            return definition.summary()

    def get_definition(self, definition_id: str, version: int | None = None) -> dict[str, Any]:
        with self.lock:
            found = self._catalog.find(definition_id, version)
            if found is None:
                what = "" if version is None else f" version {version}"
                raise EngineError(404, f"definition {definition_id!r}{what} not found")
            return found.document()

    def list_definitions(self, keyword: str, page: int, page_size: int) -> dict[str, Any]:
        with self.lock:
            matching = self._catalog.latest_matching(keyword)
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
            # Version 0 or none: the latest.
            definition = self._catalog.find(definition_id, version or None)
            if definition is None:
                what = f" version {version}" if version else ""
                raise EngineError(
                    500,
                    f"start instance: get definition {definition_id!r}{what}: definition not found",
                )
            instance = self._flow.start(definition, variables, business_key)
            self._flow.drain_chains()
            self.changed.notify_all()
            return instance.summary()

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._flow.instances.get(instance_id)
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
                for i in self._flow.instances.values()
                if (not definition_id or i.definition.compiled.id == definition_id)
                and (not status or i.status == status)
                and (not business_key or i.business_key == business_key)
            ]
            matching.sort(key=lambda i: i.started_at, reverse=True)  # newest first
            items = [i.summary() for i in _page(matching, page, page_size)]
            return {"items": items or None, "total": len(matching)}

    def history(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._flow.instances.get(instance_id)
            items = [dict(item) for item in instance.history] if instance else []
            return {"items": items or None}

    def cancel_instance(self, instance_id: str, reason: str) -> dict[str, Any]:
        with self.lock:
            instance = self._flow.instances.get(instance_id)
            if instance is None or instance.status not in RUNNING_STATUSES:
                raise EngineError(500, "cancel: no rows in result set")
            self._flow.cancel(instance, reason)
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
            instance = self._flow.instances.get(instance_id)
            if instance is None:
                raise EngineError(404, f"instance {instance_id!r} not found")
            step = instance.definition.compiled.steps.get(step_id)
            if step is None:
                raise EngineError(missing, f"step {step_id!r} not found in the definition")
            if step.type != step_type:
                raise EngineError(400, f"step {step_id!r} is a {step.type}, not a {step_type}")
            if instance.status not in RUNNING_STATUSES:
                raise EngineError(409, f"instance {instance_id!r} is {instance.status}")
            open_id = open_step_at(instance, step_id)
            if open_id is None:
                raise EngineError(missing, f"instance is not parked at step {step_id!r}")
            self._flow.finish_open_step(instance, open_id, variables, now())
            self._count(counter)
            self._flow.drain_chains()
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
            claimed = self._jobs.claim(worker_id, job_types, max_jobs, length)
            if not claimed:
                self._count("empty_polls")
                return {"jobs": None}
            self._count("jobs_delivered", len(claimed))
            extras, self.poll_extras = self.poll_extras, []
            if extras:
                self._count("poll_extras_sent", len(extras))
            self.changed.notify_all()
            return {"jobs": [*extras, *claimed]}

    @contextlib.contextmanager
    def report_in_progress(self, job_id: str | None, handler: object) -> Iterator[None]:
        """While one complete or fail request of ``job_id`` is being handled
        (from its arrival to its change): a second one of the same job
        meanwhile counts in ``overlapping_completes`` or ``overlapping_fails``
        (the contract: two completes of one job at the same moment can both
        advance the instance; a worker must never send two at once)."""
        if job_id is None:
            yield
            return
        verb = getattr(handler, "__name__", "")
        counter = "overlapping_completes" if "complete" in verb else "overlapping_fails"
        with self.lock:
            if self._reports_in_progress.get(job_id, 0) > 0:
                self._count(counter)
            self._reports_in_progress[job_id] = self._reports_in_progress.get(job_id, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                left = self._reports_in_progress[job_id] - 1
                if left:
                    self._reports_in_progress[job_id] = left
                else:
                    del self._reports_in_progress[job_id]

    def take_injected_error(self, route: str) -> tuple[int, bool] | None:
        """The next injected error answer for ``route`` (and forget it), or
        None: (status, whether the request is applied before it is given)."""
        with self.lock:
            burst = self.error_bursts.get(route)
            if not burst:
                return None
            injected = burst.pop(0)
            if not burst:
                del self.error_bursts[route]
            self._count("errors_injected")
            return injected

    def wait_complete_delay(self, interrupt: threading.Event) -> bool:
        """Wait ``complete_delay`` seconds before a completion is applied, as a
        loaded database would, without the lock (other requests go on).
        Returns False when ``interrupt`` is set meanwhile (the server stops)."""
        return self._delay(self.complete_delay, "completes_delayed", interrupt)

    def wait_fail_answer_delay(self, interrupt: threading.Event) -> bool:
        """Hold a fail's answer ``fail_answer_delay`` seconds after the fail
        was applied, without the lock (other requests go on, polls that claim
        the retry included). False when ``interrupt`` is set meanwhile."""
        return self._delay(self.fail_answer_delay, "fail_answers_delayed", interrupt)

    def _delay(self, seconds: float, counter: str, interrupt: threading.Event) -> bool:
        if seconds <= 0:
            return True
        with self.lock:
            self._count(counter)  # tests wait for this, not for time
            self.changed.notify_all()
        return not interrupt.wait(seconds)

    def complete_job(self, job_id: str, variables: dict[str, Any]) -> None:
        with self.lock:
            job = self._jobs.get(job_id)
            job.complete_calls += 1
            self._count("complete_calls")
            if job.status in ("COMPLETED", "CANCELLED"):
                return  # idempotent; a job a timer cancelled stays cancelled
            was_failed = job.status == "FAILED"
            job.status = "COMPLETED"
            self._count("jobs_completed")
            self._flow.job_completed(job, variables, was_failed)
            self.changed.notify_all()

    def fail_job(self, job_id: str, error_message: str, retryable: bool) -> None:
        with self.lock:
            job = self._jobs.get(job_id)
            job.fail_calls += 1
            self._count("fail_calls")
            # Like the real engine, neither the worker nor the job's state is
            # checked: a fail after a completion still acts (see the contract).
            if retryable and job.retries_remaining > 0:
                job.retries_remaining -= 1
                self._jobs.requeue(job)
                self._count("jobs_retried")
                self.changed.notify_all()
                return
            job.status = "FAILED"
            self._count("jobs_failed")
            self._flow.job_failed(job, error_message)
            self.changed.notify_all()

    def heartbeat_job(self, job_id: str, worker_id: str, lease_seconds: int) -> dict[str, Any]:
        """Extend a job's lease by ``lease_seconds`` (0: the engine's) from now.

        409 when the lease is lost: unknown or finished job, another worker
        holds it, or its lease has passed (swept or not yet)."""
        length = lease_seconds or self.lease_seconds
        with self.lock:
            verdict = self._jobs.extend(job_id, worker_id, length)
            if isinstance(verdict, str):
                self._count("heartbeats_refused")
                self.changed.notify_all()
                raise EngineError(409, f"lease lost: {verdict}")
            self._count("heartbeats")
            self.changed.notify_all()
            return {"accepted": True, "lockExpiresAt": format_time(verdict)}

    def revoke_lease(self, job_id: str) -> None:
        """Put a LOCKED job back in the queue now, as if its lease had passed."""
        with self.lock:
            job = self._jobs.get(job_id)
            if job.status != "LOCKED":
                raise ValueError(f"job {job_id} is {job.status}, not LOCKED")
            self._jobs.requeue(job)
            self._count("leases_expired")
            self.changed.notify_all()

    def expire_leases(self) -> int:
        """Put jobs whose lease has passed back in the queue; returns how many."""
        with self.lock:
            expired = self._jobs.expire()
            if expired:
                self._count("leases_expired", expired)
                self.changed.notify_all()
        return expired

    # -- boundary timers -----------------------------------------------------

    def fire_timers(self) -> int:
        """Fire the boundary timers that are due; returns how many fired.

        A timer whose step has ended, or whose instance is no longer ACTIVE or
        WAITING, is dropped. Like the real engine's timer sweeper, this runs
        every so often, so a timer fires up to one interval after it is due.
        """
        with self.lock:
            fired = self._timers.fire_due(self._flow.instances, self._flow.fire_timer)
            if fired:
                self._count("timers_fired", fired)
                self._flow.drain_chains()
                self.changed.notify_all()
        return fired

    def pending_timers(self) -> list[dict[str, Any]]:
        """Armed timers whose step is still open, soonest first (for tests)."""
        with self.lock:
            return self._timers.pending(self._flow.instances)

    # -- inspection (tests only; not on the HTTP surface) --------------------

    def inspect_instance(self, instance_id: str) -> dict[str, Any]:
        with self.lock:
            instance = self._flow.instances.get(instance_id)
            if instance is None:
                raise KeyError(f"no instance {instance_id!r}")
            return copy.deepcopy(instance.summary())

    def inspect_instances(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(i.summary()) for i in self._flow.instances.values()]

    def inspect_history(self, instance_id: str) -> list[dict[str, Any]]:
        with self.lock:
            instance = self._flow.instances.get(instance_id)
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
            return self._jobs.inspect(status, job_type, instance_id)

    def inspect_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self._jobs.jobs.get(job_id)
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
            self._catalog.clear()
            self._flow.clear()
            self._jobs.clear()
            self._timers.clear()
            self.counters.clear()
            self.chain_errors.clear()
            self.error_bursts.clear()
            self.changed.notify_all()


# The names other modules and tests import from here, wherever they live now.
__all__ = [
    "DEFAULT_MAX_JOBS",
    "DEFAULT_PAGE_SIZE",
    "INSTANCE_STATUSES",
    "INTERRUPTED_REASON",
    "LEASE_REQUEST_RANGE",
    "MAX_AUTOMATIC_STEPS",
    "MAX_CHAINED_STARTS",
    "RUNNING_STATUSES",
    "Definition",
    "EngineError",
    "EngineState",
    "Instance",
    "Job",
    "OpenStep",
    "format_time",
    "now",
]
