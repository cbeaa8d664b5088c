"""Delivers a job's outcome to the engine without losing or doubling it.

The engine's two report calls differ (see the contract file):

- ``complete`` is idempotent between calls that do not overlap, and the
  engine does not check the lease, so a completion is retried with backoff
  on every transient error until it lands or ``deadline`` seconds pass. Two
  completes of one job are never in flight at once: after an error that
  leaves the request possibly in flight (a timeout after it was sent, a
  broken connection, a gateway's 5xx), the engine is asked what became of it
  (``workflow_sdk.fate``), and it is sent again only once it can no longer
  be acted on; a completion the engine applied is never counted lost.
- ``fail`` is not idempotent: a second fail burns another retry or fails a
  finished instance. It is resent at once only when the previous attempt
  surely never reached the engine (the connection was refused). Otherwise
  the engine is asked: a fail that fails the step shows in the history, so
  one not applied is resent once it can no longer be in flight; a retryable
  fail with retries left leaves no trace, and is not resent (in poll mode
  the engine hands the job out again, its retry or the same attempt after
  the lease, which is the safe outcome).

A fail is never sent for a job whose completion was sent: the caller hands
one ``Outcome`` per delivery to ``deliver`` and nothing else reports it. Nor
once the job's lease has passed (``lease_end``), which is looked at right
before every send: the engine may then have handed the job to another
worker, and a fail, which checks neither worker nor job state, could undo
that worker's completion or fail an instance that moved on. Completions are
sent whatever the lease: the engine accepts late ones.

Nor for a job that stopped mattering (``stale_check``, see
``workflow_sdk.staleness``): a fail for a job of a cancelled or finished
instance, or of a step a boundary timer interrupted, would fail the instance.
A job of a cancelled or finished instance is retired instead, with an empty
completion (``Outcome.retirement``; delivered as any completion): left
locked, the engine would hand it out again after every lease. When the check
cannot reach the engine, the rules above decide alone.

Kafka dispatch has no lease: nothing delivers a job again while this process
runs, so there (``until_settled``) a report is never given up until the
process stops, and a fail the engine cannot confirm is sent again once it
can no longer be in flight, unless the engine's dispatch of its retry was
seen.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import EngineClientError, EngineConnectionError
from workflow_sdk.fate import IN_FLIGHT_WINDOW, Fate, FateCheck, Finding
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.staleness import RETIRE_REASONS, StaleVerdict

log = logging.getLogger("workflow_sdk.reporting")

#: Default seconds to keep retrying a completion before it is counted lost.
DEFAULT_REPORT_DEADLINE = 600.0


class ReportStatus(enum.Enum):
    DELIVERED = "delivered"
    #: The engine answered with a permanent error (unknown job, bad request).
    REJECTED = "rejected"
    #: Gave up: the deadline passed, or a fail could not be resent safely.
    LOST = "lost"
    #: A fail not sent because the job's lease had passed (the engine redelivers it).
    WITHHELD = "withheld"
    #: A fail not sent because the job no longer matters (instance finished or
    #: cancelled, step interrupted): sending it would fail the instance.
    STALE = "stale"


def _verb(outcome: Outcome) -> str:
    if outcome.retire:
        return "retirement"
    return "completion" if outcome.succeeded else "failure"


def _attempt(client: WorkerEngineClient, worker_id: str, outcome: Outcome) -> None:
    if outcome.succeeded:
        client.complete_job(outcome.job_id, worker_id, outcome.variables)
    else:
        client.fail_job(outcome.job_id, worker_id, outcome.error_message, outcome.retryable)


class Sent(enum.Enum):
    """Where a report that got an error instead of its answer stands."""

    #: the engine refused it for good (4xx, unknown job): never resend
    REFUSED = "refused"
    #: the engine surely never got it (no connection, or the request could
    #: not be written; a 408 or 429): resend after the backoff
    NOT_SENT = "not_sent"
    #: the engine answered a transient error: it is done with the request,
    #: which may or may not have been applied
    ANSWERED = "answered"
    #: the engine may have got it and may still act on it (a timeout or a
    #: broken connection after the request went out, a gateway's 502/503/504)
    IN_FLIGHT = "in_flight"


#: Answers from something in front of the engine that may have passed the
#: request on (a gateway's timeout or bad gateway, the engine's own 504).
_GATEWAY_STATUSES = frozenset({502, 503, 504})
#: Transient answers that say the request was not processed.
_NOT_PROCESSED_STATUSES = frozenset({408, 429})


def where_is(exc: EngineClientError) -> Sent:
    """Where the report stands after ``exc`` (see ``Sent``)."""
    if not exc.retryable:
        return Sent.REFUSED
    if isinstance(exc, EngineConnectionError):
        return Sent.IN_FLIGHT if exc.request_sent else Sent.NOT_SENT
    if exc.status_code in _GATEWAY_STATUSES:
        return Sent.IN_FLIGHT
    if exc.status_code in _NOT_PROCESSED_STATUSES:
        return Sent.NOT_SENT
    return Sent.ANSWERED


class _Next(enum.Enum):
    """A resolution's step that is not a final status."""

    SEND = "send"
    LOOK = "look"


def _monotonic() -> float:
    # Looked up at each call: tests replace this module's ``time``.
    return time.monotonic()


class InFlightReports:
    """Reports of each job that may still be in flight, across deliveries.

    ``deliver`` sends one request of a job at a time; when it returns while
    its last request may still be acted on (given up at its deadline or at
    shutdown), it notes until when, and any later delivery of the same job
    (the re-run after a lease, from any thread) waits until then: two reports
    of one job are never in flight together.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or _monotonic
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def hold(self, job_id: str, until: float) -> None:
        with self._lock:
            self._prune()
            self._until[job_id] = max(until, self._until.get(job_id, 0.0))

    def clear_in(self, job_id: str) -> float:
        """Seconds until no earlier report of ``job_id`` can be in flight."""
        with self._lock:
            self._prune()
            until = self._until.get(job_id)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def _prune(self) -> None:
        # Lock held. Entries are few (reports given up while in flight).
        now = self._clock()
        for job_id in [j for j, until in self._until.items() if until <= now]:
            del self._until[job_id]


#: The process's one registry (``deliver`` consults it for every report).
IN_FLIGHT = InFlightReports()


def deliver(
    client: WorkerEngineClient,
    worker_id: str,
    outcome: Outcome,
    *,
    deadline: float = DEFAULT_REPORT_DEADLINE,
    give_up: threading.Event | None = None,
    on_retry: Callable[[Outcome, EngineClientError], None] | None = None,
    lease_end: float | None = None,
    stale_check: Callable[[], StaleVerdict] | None = None,
    fate: FateCheck | None = None,
    until_settled: bool = False,
    window: float = IN_FLIGHT_WINDOW,
) -> ReportStatus:
    """Report ``outcome``; blocks through the retries.

    ``give_up``, when set, ends the waiting between retries early (the
    outcome is then counted lost). ``on_retry`` is called before each resend.
    ``lease_end`` (``time.monotonic()`` value) stops a failure from being sent
    or resent after the job's lease. ``stale_check`` is asked once before a
    failure is sent; a STALE verdict sends nothing.

    ``fate`` asks the engine what became of a report whose answer was lost
    (see ``workflow_sdk.fate``); without it such a complete is resent once
    ``window`` seconds passed since it was sent, and such a fail is not.
    ``until_settled``: nothing else will deliver this job again (Kafka
    dispatch has no lease), so the report is never given up while the
    process runs (``deadline`` does not apply, only ``give_up`` ends it),
    and a fail whose fate the engine cannot tell is resent once it can no
    longer be in flight (see the module doc).
    """
    return _Delivery(
        client,
        worker_id,
        outcome,
        deadline=deadline,
        give_up=give_up,
        on_retry=on_retry,
        lease_end=None if until_settled else lease_end,
        stale_check=stale_check,
        fate=fate,
        until_settled=until_settled,
        window=window,
    ).run()


class _Delivery:
    """One call of ``deliver``: its state between attempts."""

    def __init__(
        self,
        client: WorkerEngineClient,
        worker_id: str,
        outcome: Outcome,
        *,
        deadline: float,
        give_up: threading.Event | None,
        on_retry: Callable[[Outcome, EngineClientError], None] | None,
        lease_end: float | None,
        stale_check: Callable[[], StaleVerdict] | None,
        fate: FateCheck | None,
        until_settled: bool,
        window: float,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.outcome = outcome
        self.give_up = give_up
        self.on_retry = on_retry
        self.stale_check = stale_check
        self.fate = fate
        self.until_settled = until_settled
        self.window = window
        self.verb = _verb(outcome)
        self.backoff = Backoff()
        self.started = time.monotonic()
        self.deadline = deadline
        self.stop_at = math.inf if until_settled else self.started + deadline
        #: a failure is never sent after the lease (a completion is: the engine
        #: accepts late ones)
        self.lease_end = None if outcome.succeeded else lease_end
        if self.lease_end is not None:
            self.stop_at = min(self.stop_at, self.lease_end)

    # -- the attempts ---------------------------------------------------------------

    def run(self) -> ReportStatus:
        outcome = self.outcome
        earlier = IN_FLIGHT.clear_in(outcome.job_id)
        if earlier > 0:
            # An earlier report of this job was given up while it may still
            # be acted on: never two in flight at once.
            log.warning(
                "job %s (%s): an earlier report of this job may still be in flight; "
                "the %s waits %.1f s for it",
                outcome.job_id,
                outcome.job_type,
                self.verb,
                earlier,
            )
            if self._wait(earlier):
                return self._lost_at_shutdown()
        if not outcome.succeeded:
            if self._lease_passed("after its lease had passed"):
                return ReportStatus.WITHHELD
            if self.stale_check is not None:
                verdict = self.stale_check()
                if verdict.stale:
                    retire = verdict.reason in RETIRE_REASONS
                    log.info(
                        "job %s (%s) no longer matters (%s); its failure is not sent%s: %s",
                        outcome.job_id,
                        outcome.job_type,
                        verdict.detail,
                        "; the job is retired with an empty completion" if retire else "",
                        outcome.error_message,
                    )
                    if not retire:
                        return ReportStatus.STALE
                    return self._retire()
        return self._send()

    def _retire(self) -> ReportStatus:
        """Send an empty completion in place of a fail that must not go;
        STALE once it is delivered (the job's outcome: it no longer matters)."""
        self.outcome = Outcome.retirement(self.outcome.job_id, self.outcome.job_type)
        self.verb = _verb(self.outcome)
        self.lease_end = None  # a completion goes whatever the lease
        self.stop_at = math.inf if self.until_settled else self.started + self.deadline
        status = self._send()
        return ReportStatus.STALE if status is ReportStatus.DELIVERED else status

    def _send(self) -> ReportStatus:
        outcome = self.outcome
        while True:
            # Looked at right before every send: the stale check, a backoff
            # or a resolution may have taken the rest of the lease.
            if self._lease_passed("and its lease passed before it could be sent"):
                return ReportStatus.WITHHELD
            sent_at = time.monotonic()
            try:
                _attempt(self.client, self.worker_id, outcome)
            except EngineClientError as exc:
                status = self._after_error(exc, sent_at)
                if status is not None:
                    return status
                continue
            return ReportStatus.DELIVERED

    def _after_error(self, exc: EngineClientError, sent_at: float) -> ReportStatus | None:
        """What to do after a request failed: a final status, or None to send again."""
        outcome = self.outcome
        where = where_is(exc)
        if where is Sent.REFUSED:
            log.error(
                "job %s (%s): engine refused the %s: %s",
                outcome.job_id,
                outcome.job_type,
                self.verb,
                exc,
            )
            return ReportStatus.REJECTED
        if where is Sent.NOT_SENT or (where is Sent.ANSWERED and outcome.succeeded):
            # Nothing of it is in flight, and a repeated complete is a no-op.
            return self._back_off(exc)
        in_flight_until = sent_at + self.window if where is Sent.IN_FLIGHT else sent_at
        if self.until_settled and not outcome.succeeded:
            # The engine answered with its own error: it may have applied the
            # fail all the same, and a retryable one leaves no trace but the
            # dispatch of its retry, which takes a moment to show. Resending
            # before then would burn a retry (found by the chaos suite).
            in_flight_until = sent_at + self.window
        return self._resolve(exc, in_flight_until)

    def _back_off(self, exc: EngineClientError) -> ReportStatus | None:
        outcome = self.outcome
        wait = self.backoff.next_delay()
        if time.monotonic() + wait > self.stop_at:
            if self._lease_passed("and its lease passed while it was retried"):
                return ReportStatus.WITHHELD
            log.error(
                "job %s (%s): %s LOST after %d attempts over %.0f s: %s",
                outcome.job_id,
                outcome.job_type,
                self.verb,
                self.backoff.failures,
                time.monotonic() - self.started,
                exc,
            )
            return ReportStatus.LOST
        log.warning(
            "job %s (%s): %s failed (attempt %d), retrying in %.2f s: %s",
            outcome.job_id,
            outcome.job_type,
            self.verb,
            self.backoff.failures,
            wait,
            exc,
        )
        if self.on_retry is not None:
            self.on_retry(outcome, exc)
        if self._wait(wait):
            return self._lost_at_shutdown()
        return None

    # -- a report whose answer was lost -------------------------------------------

    def _resolve(self, exc: EngineClientError, in_flight_until: float) -> ReportStatus | None:
        """Find out what became of the last request before anything is sent again.

        Returns the final status, or None when the report must be sent again
        (it was not applied and can no longer be).
        """
        outcome = self.outcome
        log.warning(
            "job %s (%s): the %s got no answer (%s); asking the engine what became of it "
            "before anything is sent again",
            outcome.job_id,
            outcome.job_type,
            self.verb,
            exc,
        )
        looks = Backoff()
        while True:
            finding = (
                self.fate.look(outcome)
                if self.fate is not None
                else Finding(Fate.UNKNOWN, "the engine's history cannot be read here")
            )
            now = time.monotonic()
            if finding.fate is Fate.APPLIED:
                log.info(
                    "job %s (%s): the %s reached the engine after all (%s)",
                    outcome.job_id,
                    outcome.job_type,
                    self.verb,
                    finding.detail,
                )
                return ReportStatus.DELIVERED
            if finding.fate is Fate.SETTLED:
                log.info(
                    "job %s (%s) no longer matters (%s); its %s is not sent again",
                    outcome.job_id,
                    outcome.job_type,
                    finding.detail,
                    self.verb,
                )
                return ReportStatus.STALE
            step = self._next_step(finding, now, in_flight_until)
            if step is _Next.SEND:
                if self.on_retry is not None:
                    self.on_retry(outcome, exc)
                return None
            if isinstance(step, ReportStatus):
                return step
            wait = looks.next_delay()
            if now < in_flight_until:
                wait = min(wait, in_flight_until - now)
            if now + wait > self.stop_at:
                return self._give_up_unresolved(finding, in_flight_until)
            if self._wait(wait):
                IN_FLIGHT.hold(outcome.job_id, in_flight_until)
                return self._lost_at_shutdown()

    def _next_step(
        self, finding: Finding, now: float, in_flight_until: float
    ) -> ReportStatus | _Next:
        """After a finding that is neither APPLIED nor SETTLED: send the report
        again, give up (a status), or look again."""
        outcome = self.outcome
        in_flight = now < in_flight_until
        if not outcome.succeeded and not self.until_settled:
            # Poll mode: a fail is sent again only when the history shows it
            # was not applied, once it can no longer be, within the lease.
            # Otherwise it is never sent twice: the engine hands the job out
            # again (its retry, or the same attempt once the lease passed).
            if finding.fate is not Fate.NOT_APPLIED or in_flight_until >= self.stop_at:
                return self._give_up_unresolved(finding, in_flight_until)
            return _Next.LOOK if in_flight else _Next.SEND
        if in_flight:
            return _Next.LOOK
        if outcome.succeeded or finding.fate is Fate.NOT_APPLIED:
            # Not applied; or a complete, which cannot overlap now and is a
            # no-op if it was applied.
            return _Next.SEND
        if finding.fate is Fate.NO_TRACE:
            # No lease will bring the job back (Kafka): unless its retry was
            # seen, the fail is sent again (if the first had been applied
            # after all, this costs the job one retry; never sending it would
            # leave the instance waiting for ever).
            log.warning(
                "job %s (%s): the engine shows no sign of the failure (%s); sending it again",
                outcome.job_id,
                outcome.job_type,
                finding.detail,
            )
            return _Next.SEND
        return _Next.LOOK  # the engine could not be asked: ask again

    def _give_up_unresolved(self, finding: Finding, in_flight_until: float) -> ReportStatus:
        outcome = self.outcome
        IN_FLIGHT.hold(outcome.job_id, in_flight_until)
        if self._lease_passed("and its lease passed before its fate was known"):
            return ReportStatus.WITHHELD
        log.error(
            "job %s (%s): %s LOST: no answer, and after %.0f s the engine does not show it "
            "applied (%s)",
            outcome.job_id,
            outcome.job_type,
            self.verb,
            time.monotonic() - self.started,
            finding.detail,
        )
        return ReportStatus.LOST

    # -- helpers --------------------------------------------------------------------

    def _lease_passed(self, when: str) -> bool:
        if self.lease_end is None or time.monotonic() < self.lease_end:
            return False
        log.error(
            "job %s (%s) failed %s; the failure is not sent (the job may already run "
            "elsewhere; the engine redelivers it): %s",
            self.outcome.job_id,
            self.outcome.job_type,
            when,
            self.outcome.error_message,
        )
        return True

    def _wait(self, seconds: float) -> bool:
        """Wait; True when ``give_up`` was set meanwhile."""
        if self.give_up is not None:
            return self.give_up.wait(seconds)
        time.sleep(seconds)
        return False

    def _lost_at_shutdown(self) -> ReportStatus:
        log.error(
            "job %s (%s): %s LOST: shutting down before it could be delivered",
            self.outcome.job_id,
            self.outcome.job_type,
            self.verb,
        )
        return ReportStatus.LOST


__all__ = [
    "DEFAULT_REPORT_DEADLINE",
    "IN_FLIGHT",
    "InFlightReports",
    "ReportStatus",
    "Sent",
    "deliver",
    "where_is",
]
