"""The Runner's watch over its running jobs: lease renewal, stale checks, report gauges.

One thread (``JobWatch.run``) looks after every job a worker thread is
running. It only decides what is due; the engine calls themselves run on
two small pools of threads, one per concern (``_CallPool``): a slow
history read never holds back a lease renewal (the lease would run out and
the job's result be thrown away), and neither a slow renewal nor a slow
check of one job holds back another job's (each job has at most one of
each in flight, and each pool has a thread per worker thread).

- **Lease renewal** (``heartbeat=True``): before the job's lease ends it
  asks the engine to extend it (``extend_lease``). A transient error is
  retried with backoff, always inside the current lease. "Lease lost" (a
  409, or a lease that ran out before a renewal got through) means the job
  may already run on another worker: the job's cancel event is set and the
  Runner reports nothing for it, not even a completion (two completions of
  one job at the same moment can both advance the instance). An engine
  without the route turns renewal off for good, with one warning.
- **Stale checks** (``stale_check_interval`` > 0): a job that has run that
  long is checked with ``check_job`` every interval. A stale job (instance
  finished or cancelled, step interrupted) gets its cancel event set and is
  counted once; the Runner reports nothing for it.
- **Report gauges**: reports pending and the age of the oldest one, kept
  fresh every second.

A thread cannot be killed: the cancel event is a courtesy the handler may
watch. This thread needs the GIL like any other: while a handler holds it in
one long C call, renewals are late (see "The GIL caveat" in docs/api.md).

Every decision about a job is taken under one lock together with the
worker's "handler done" mark, so a job is either cancelled before its
report is chosen or not at all.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workflow_sdk.errors import LeaseLostError
from workflow_sdk.handler.outcome import describe_exception
from workflow_sdk.lease import (
    next_renewal,
    renewal_interval,
    renewal_retry_at,
    renewed_lease_end,
    renewed_length,
)
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.staleness import InstanceReader, JobLiveness, StaleVerdict, check_job

log = logging.getLogger("workflow_sdk.runner")

#: Longest the watch sleeps: the report-age gauge is refreshed this often.
_REFRESH = 1.0
CANCEL_LEASE_LOST = "lease_lost"
CANCEL_STALE = "stale"
CANCEL_SHUTDOWN = "shutdown"
#: Reasons after which the watch leaves a job alone. Not shutdown: during the
#: drain a job still needs its lease renewed and may still go stale.
_FINAL = frozenset({CANCEL_LEASE_LOST, CANCEL_STALE})


@dataclass(eq=False)
class WatchedJob:
    """One running job, as the watch sees it. Fields are guarded by the watch's lock."""

    job: dict[str, Any]
    cancel: threading.Event
    lease_end: float  # time.monotonic() after which the engine may hand the job out again
    lease_length: float  # seconds the engine grants per claim or renewal
    next_renewal: float
    next_stale_check: float
    backoff: Backoff = field(default_factory=Backoff)
    #: Why the cancel event was set (a CANCEL_* constant), or None. Lease
    #: loss and staleness replace shutdown: they decide what is reported.
    cancel_reason: str | None = None
    #: The stale verdict's reason (metric label) when cancelled as stale.
    stale_reason: str = ""
    #: The handler has returned; the watch leaves the job alone.
    done: bool = False
    renewal_in_flight: bool = False
    check_in_flight: bool = False

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def job_type(self) -> str:
        return str(self.job["jobType"])


class _CallPool:
    """Up to ``size`` daemon threads running the engine calls of one concern.

    Started on the first call. Daemon threads: a call stuck in the client
    (bounded by its timeout) does not hold up the interpreter's exit.
    """

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[[], None]) -> None:
        if not self._threads:
            for index in range(self._size):
                thread = threading.Thread(
                    target=self._loop, name=f"{self._name}-{index}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._calls.put(call)

    def close(self) -> None:
        """Each thread ends after the calls queued before this one."""
        for _ in self._threads:
            self._calls.put(None)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call()
            except Exception:
                # A bug of ours (the client's errors are caught in the call):
                # keep the thread for the other jobs.
                log.exception("%s: unexpected error", self._name)


class JobWatch:
    """Renews leases and checks staleness of running jobs: one thread decides,
    one pool of threads per concern calls the engine.

    :param workers: threads per pool: the most jobs that run at once.
    """

    def __init__(
        self,
        client: object,
        worker_id: str,
        metrics: Metrics,
        *,
        heartbeat: bool,
        lease_seconds: int | None,
        heartbeat_interval: float | None,
        stale_check_interval: float,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._metrics = metrics
        self._renewing = heartbeat
        self._lease_seconds = lease_seconds
        self._heartbeat_interval = heartbeat_interval
        self._stale_interval = stale_check_interval
        self._reader: InstanceReader | None = reader_of(client)
        self._cond = threading.Condition()
        self._jobs: list[WatchedJob] = []
        self._reports: dict[int, float] = {}  # id(token) -> time the report began
        self._stopped = False
        #: Counters read by the Runner's stats (guarded by ``_cond``).
        self.renewals_accepted = 0
        self.leases_lost = 0
        self.stale_found = 0
        self._renewals = _CallPool("workflow-runner-renew", workers)
        self._checks = _CallPool("workflow-runner-check", workers)

    @property
    def renewing(self) -> bool:
        """Renewal is on: asked for, and the engine has not shown it cannot.
        Read without the lock: a stale answer costs one poll's lease field."""
        return self._renewing

    # -- called by worker threads ----------------------------------------------

    def add(self, job: dict[str, Any], lease_end: float, lease_length: float) -> WatchedJob:
        now = time.monotonic()
        length = renewed_length(self._lease_seconds, lease_length)
        interval = renewal_interval(self._heartbeat_interval, length)
        entry = WatchedJob(
            job=job,
            cancel=threading.Event(),
            lease_end=lease_end,
            lease_length=length,
            # The first renewal one interval after the claim (``workflow_sdk.lease``).
            next_renewal=next_renewal(lease_end - lease_length, interval, lease_end, lease_length),
            next_stale_check=now + self._stale_interval,
        )
        with self._cond:
            if self._stopped:
                entry.cancel.set()
                entry.cancel_reason = CANCEL_SHUTDOWN
            self._jobs.append(entry)
            self._cond.notify_all()
        return entry

    def finish(self, entry: WatchedJob) -> WatchedJob:
        """Mark the handler done; returns the entry, whose ``cancel_reason`` is now final."""
        with self._cond:
            entry.done = True
            return entry

    def extend(self, entry: WatchedJob, lease_end: float) -> None:
        """The engine handed the job out again to this Runner (a re-delivery,
        coalesced with the run in progress): its lease now lasts until
        ``lease_end`` at least."""
        with self._cond:
            if lease_end > entry.lease_end:
                entry.lease_end = lease_end
                self._cond.notify_all()

    def remove(self, entry: WatchedJob) -> None:
        with self._cond:
            if entry in self._jobs:
                self._jobs.remove(entry)

    def report_began(self, token: object) -> None:
        with self._cond:
            self._reports[id(token)] = time.monotonic()
            self._publish()

    def report_ended(self, token: object) -> None:
        with self._cond:
            self._reports.pop(id(token), None)
            self._publish()

    # -- called by the Runner ----------------------------------------------------

    def cancel_all(self, reason: str) -> int:
        """Set the cancel event of every running job; returns how many."""
        count = 0
        with self._cond:
            for entry in self._jobs:
                if not entry.done and entry.cancel_reason is None:
                    entry.cancel_reason = reason
                    entry.cancel.set()
                    count += 1
        return count

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._renewals.close()
        self._checks.close()

    def join_calls(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the calls in flight after ``stop``."""
        deadline = time.monotonic() + timeout
        self._renewals.join(timeout)
        self._checks.join(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        """The watch thread's body: until ``stop()``."""
        while True:
            with self._cond:
                if self._stopped:
                    self._publish()
                    return
                now = time.monotonic()
                renew, check, wake = self._due(now)
                self._publish()
                if not renew and not check:
                    self._cond.wait(max(0.0, min(wake, now + _REFRESH) - now))
                    continue
            # Never here: a call on this thread would hold back every other.
            for entry in renew:
                self._renewals.submit(functools.partial(self._renew, entry))
            for entry in check:
                self._checks.submit(functools.partial(self._check, entry))

    # -- internals (``_cond`` held unless said otherwise) -------------------------

    def _publish(self) -> None:
        now = time.monotonic()
        oldest = min(self._reports.values(), default=now)
        self._metrics.set_report_backlog(len(self._reports), now - oldest)

    def _due(self, now: float) -> tuple[list[WatchedJob], list[WatchedJob], float]:
        renew: list[WatchedJob] = []
        check: list[WatchedJob] = []
        wake = now + _REFRESH
        for entry in self._jobs:
            if entry.done or entry.cancel_reason in _FINAL:
                continue
            if self._renewing and not entry.renewal_in_flight:
                if now >= entry.lease_end:
                    self._lose(entry, "its lease ran out before a renewal got through")
                    continue
                if now >= entry.next_renewal:
                    entry.renewal_in_flight = True
                    renew.append(entry)
                else:
                    wake = min(wake, entry.next_renewal)
            if self._reader is not None and self._stale_interval > 0:
                if entry.check_in_flight:
                    continue
                if now >= entry.next_stale_check:
                    entry.check_in_flight = True
                    check.append(entry)
                else:
                    wake = min(wake, entry.next_stale_check)
        return renew, check, wake

    def _lose(self, entry: WatchedJob, why: str) -> None:
        entry.cancel_reason = CANCEL_LEASE_LOST
        entry.cancel.set()
        self.leases_lost += 1
        self._metrics.lease_renewal("lease_lost")
        log.warning(
            "job %s (%s): lease lost (%s); the job may run on another worker: its cancel "
            "event is set and nothing will be reported for it",
            entry.job_id,
            entry.job_type,
            why,
        )

    def _renew(self, entry: WatchedJob) -> None:
        # Without the lock: one HTTP call.
        sent_at = time.monotonic()
        answer: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            answer = self._client.extend_lease(  # type: ignore[attr-defined]
                entry.job_id, self._worker_id, self._lease_seconds or 0
            )
        except Exception as exc:
            error = exc
        with self._cond:
            entry.renewal_in_flight = False
            if entry.done or entry.cancel_reason in _FINAL:
                # The job ended meanwhile: its report, not the renewal,
                # decides. An extension the engine made is still counted (as
                # the supervisor counts it), so the figures match the engine's.
                if error is None and answer is not None and answer.get("accepted") is not False:
                    self._count_accepted()
                return
            if isinstance(error, LeaseLostError):
                self._lose(entry, f"the engine refused the renewal: {error.message}")
            elif error is not None:
                self._retry_renewal(entry, error)
            elif answer is None:
                self._renewal_unsupported()
            elif answer.get("accepted") is False:
                self._lose(entry, f"the engine did not accept the renewal: {answer!r}")
            else:
                self._count_accepted()
                entry.backoff.reset()
                # The engine extended from its own "now", after we sent: counting
                # from the send time errs on the safe side.
                entry.lease_end = renewed_lease_end(entry.lease_end, sent_at, entry.lease_length)
                interval = renewal_interval(self._heartbeat_interval, entry.lease_length)
                entry.next_renewal = next_renewal(
                    sent_at, interval, entry.lease_end, entry.lease_length
                )
                log.debug("job %s: lease renewed (%r)", entry.job_id, answer)
            self._cond.notify_all()

    def _count_accepted(self) -> None:
        self.renewals_accepted += 1
        self._metrics.lease_renewal("accepted")

    def _retry_renewal(self, entry: WatchedJob, error: BaseException) -> None:
        self._metrics.lease_renewal("retry")
        now = time.monotonic()
        wait = entry.backoff.next_delay()
        # Inside the current lease: never later than halfway to its end. (A
        # lease that has passed meanwhile is lost: the notify after this call
        # wakes the watch thread, which says so.)
        entry.next_renewal = renewal_retry_at(now, wait, entry.lease_end)
        log.warning(
            "job %s (%s): lease renewal failed (attempt %d), retrying in %.2f s (the lease "
            "ends in %.1f s): %s",
            entry.job_id,
            entry.job_type,
            entry.backoff.failures,
            entry.next_renewal - now,
            entry.lease_end - now,
            describe_exception(error),
        )

    def _renewal_unsupported(self) -> None:
        self._metrics.lease_renewal("unsupported")
        if self._renewing:
            self._renewing = False
            log.warning(
                "heartbeat=True, but the engine cannot extend leases (a released engine): "
                "lease renewal is off; a job that outlives its lease may be handed to "
                "another worker and run twice"
            )

    def _check(self, entry: WatchedJob) -> None:
        # Without the lock: up to two HTTP calls.
        assert self._reader is not None
        try:
            verdict = check_job(self._reader, entry.job)
        except Exception as exc:  # a client bug must not end the watch thread
            log.exception("job %s: stale check failed", entry.job_id)
            verdict = StaleVerdict(JobLiveness.UNKNOWN, "", describe_exception(exc))
        with self._cond:
            entry.check_in_flight = False
            entry.next_stale_check = time.monotonic() + self._stale_interval
            if entry.done or entry.cancel_reason in _FINAL:
                return
            if verdict.stale:
                entry.cancel_reason = CANCEL_STALE
                entry.stale_reason = verdict.reason
                entry.cancel.set()
                self.stale_found += 1
                self._metrics.stale_job(entry.job_type, verdict.reason or "unknown")
                log.info(
                    "job %s (%s) of instance %s no longer matters (%s): its cancel event is "
                    "set and nothing will be reported for it",
                    entry.job_id,
                    entry.job_type,
                    entry.job.get("instanceId"),
                    verdict.detail,
                )
            elif verdict.detail:
                log.debug("job %s: stale check: %s", entry.job_id, verdict.detail)
            self._cond.notify_all()


def reader_of(client: object) -> InstanceReader | None:
    """``client`` when it can read instances and their history, else None."""
    if callable(getattr(client, "get_instance", None)) and callable(
        getattr(client, "get_instance_history", None)
    ):
        return client  # type: ignore[return-value]
    return None


__all__ = [
    "CANCEL_LEASE_LOST",
    "CANCEL_SHUTDOWN",
    "CANCEL_STALE",
    "JobWatch",
    "WatchedJob",
    "reader_of",
]
