"""The supervisor's intake: where jobs come in, when to ask for them, and the claim rules.

The intake owns the job source (the poller, or a Kafka feeder: opened once
the first worker is ready, ``open``) and the state of asking it: when the
next poll is due, the backoff and outage log after failures, the moment the
last poll was requested (reports wait for it a little, ``REPORT_HOLD``). It
turns a source's answer into claims in the job ledger, hands claimed jobs to
idle workers (``dispatch_claimed``), and settles each job with its source
when the job leaves. Everything the rest of the loop needs of the source
goes through here (``take``, ``settle``, ``answered``, ``retry_seen``,
``poll_in_flight``...): nobody else holds it. Starting and stopping workers
is the arbiter's.

The main loop calls in here on every tick, directly: each poll plan is
computed once per tick at most. The phase is passed in (the arbiter owns
it), and so is the configuration where it may change on SIGHUP.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from workflow_sdk.errors import DispatchModeError
from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import describe_exception
from workflow_sdk.jobcore import PollOutageLog, usable_jobs
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.lease import lease_seconds
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.sanitize import redact_text
from workflow_sdk.supervisor.config import SupervisorConfig
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.status import SourceView
from workflow_sdk.supervisor.io.source import NOT_OPEN, JobSource, PollResult, SourceOpener
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy, EmptyAnswer, PollPlan, plan_poll
from workflow_sdk.supervisor.loop.kafka_types import types_to_consume
from workflow_sdk.supervisor.loop.ledger import ClaimVerdict, JobEntry, JobLedger, JobState
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds a report may wait for the poll in flight to return first.
REPORT_HOLD = 0.05
#: Characters of a failed request's error kept for /status and /readyz.
ERROR_TEXT_LIMIT = 300


class PollVerdict(enum.Enum):
    """What a source's answer asks of the arbiter."""

    #: the answer's jobs (maybe none) are claimed: hand them to idle workers
    CLAIMED = "claimed"
    #: the request failed: the next one waits for the backoff
    FAILED = "failed"
    #: the engine dispatches through Kafka and refuses polls: stop
    WRONG_DISPATCH = "wrong_dispatch"


class Intake:
    """The job source, the poll's timing and the claim rules (see the module doc)."""

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        claims: ClaimPolicy,
        stats: SupervisorStats,
        poll_interval: float,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.claims = claims
        self.stats = stats
        self.metrics = metrics
        #: Seconds to wait after a poll that brought no job (SIGHUP may change it).
        self.poll_interval = poll_interval
        #: Where jobs come from: ``NOT_OPEN`` until the first worker is ready.
        #: Replaced once (``open``); read by any thread (/metrics, reporters).
        self._source: JobSource = NOT_OPEN
        self._open = False
        #: ``time.monotonic()`` when the last poll was requested
        self.requested_at = 0.0
        #: When the next poll is due: after a failure's backoff, or
        #: ``poll_interval`` after an empty answer (``_empty`` says which and
        #: when a poll need not wait for it).
        self.next_poll_at = 0.0
        #: The last poll that found no job, while its wait lasts.
        self._empty: EmptyAnswer | None = None
        #: The job types of the request out, and the report answers taken then.
        self._asked: tuple[frozenset[str], int] = (frozenset(), 0)
        self._backoff = Backoff()
        self._outage = PollOutageLog(log)
        #: Intake paused (``pause``): no request goes to the source.
        self.paused = False
        #: ``time.monotonic()`` of the source's last answer without an error.
        self.last_ok_at = 0.0
        #: The last failed answer's error, redacted and shortened.
        self.last_error = ""

    # -- the source --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """The source is open (a worker has been ready)."""
        return self._open

    def open(
        self,
        opener: SourceOpener,
        job_types: tuple[str, ...],
        wake: Callable[[], None],
    ) -> None:
        """Open the source for the first ready worker's ``job_types``. The
        caller then tells it the report answers counted so far (``answered``):
        a reporter thread that found it not yet open told nobody.

        :raises SourceUnavailableError: jobs cannot be taken (see the opener).
        """
        self._source = opener(job_types, wake)
        self._open = True

    def take(self) -> PollResult | None:
        """The answer to the request out, once it came (after a wake-up)."""
        return self._source.take()

    @property
    def poll_in_flight(self) -> bool:
        """A request is out and its answer not yet taken."""
        return self._source.busy

    def answered(self, count: int) -> None:
        """``count`` report answers have come in all (reporter threads): an
        armed poll goes out once its answers are in."""
        if self._open:
            self._source.answered(count)

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        """Whether the source holds the engine's retry of ``job`` (as the source
        gave it): the mark of an applied retryable fail in Kafka mode. Any
        thread (reporters ask while they resolve a lost fail)."""
        return self._source.retry_seen(job)

    def settle(self, entry: JobEntry, done: bool) -> None:
        """``entry``'s job is finished for good (``done``: a Kafka record may be
        committed), or given up to be delivered again."""
        if entry.origin is not None:
            self._source.settle(entry.origin, done)

    def source_stats(self) -> SourceStats:
        """The source's counters; zeros until it opens. Any thread (the
        /metrics server's): the source is replaced once, never changed."""
        return self._source.stats()

    def disarm(self) -> None:
        """Stop claiming: a poll not yet sent claims nothing now."""
        self._source.disarm()

    def close(self) -> None:
        self._source.close()

    # -- when to poll ----------------------------------------------------------------

    def may_poll(self, phase: Phase) -> bool:
        return (
            phase in (Phase.RUNNING, Phase.RELOADING)
            and self._open
            and not self.paused
            and not self._source.busy
        )

    # -- pause and resume -------------------------------------------------------------

    def pause(self) -> bool:
        """Ask the source for nothing more (False: already paused). A request
        already out is answered and its jobs run (they are claimed: left
        alone they would wait for their lease); one that waits for report
        answers is withdrawn. In Kafka mode the feeder, asked for nothing,
        keeps every partition paused and its groups served."""
        if self.paused:
            return False
        self.paused = True
        self._source.disarm()
        return True

    def resume(self) -> bool:
        """Ask the source again (False: not paused). A backoff after failed
        requests still holds."""
        if not self.paused:
            return False
        self.paused = False
        return True

    def source_view(self, kind: str, now: float, engine_timeout: float) -> SourceView:
        """The source as /status and /readyz show it (see ``SourceView``)."""
        source = self._source
        out = source.busy and not source.armed
        failures = self._backoff.failures
        return SourceView(
            kind=kind,
            open=self._open,
            in_flight_since=max(self.requested_at, source.sent_at) if out else 0.0,
            armed=source.busy and source.armed,
            last_ok_at=self.last_ok_at,
            failures=failures,
            last_error=self.last_error if failures else "",
            next_request_at=self.next_poll_at if failures else 0.0,
            responsive=self.healthy(now, engine_timeout),
        )

    def poll_deadline(self, now: float, phase: Phase) -> float:
        """When the loop must wake for the next poll (``inf``: not for a poll).

        Only a poll time still ahead (a poll due now went out last tick),
        and only when a poll would go out then: held back (no room, jobs
        waiting), a passed poll time would make the loop spin.
        """
        if (
            self.next_poll_at > now
            and self.may_poll(phase)
            and plan_poll(self.pool, self.ledger, self.claims).wanted > 0
        ):
            return self.next_poll_at
        return math.inf

    def answers_wake_loop(self, phase: Phase, plan: PollPlan | None) -> bool:
        """Whether a report's answer must wake the loop at once: it frees room
        a held-back poll waits for, or lets a held retry start, or ends the
        wait after an empty poll (the answer may mean a new job), or no job
        runs (nothing else wakes the loop soon). Otherwise it waits for the
        next wake-up (a worker's result, a poll's answer): one wake-up fewer
        per job."""
        if (
            phase is not Phase.RUNNING
            or self.ledger.attempts_held
            or self.ledger.count(JobState.RUNNING) == 0
        ):
            return True
        if not self.may_poll(phase):
            return False
        plan = plan or plan_poll(self.pool, self.ledger, self.claims)
        return plan.held_back or (plan.wanted > 0 and self._empty is not None)

    def _waits(self, now: float, plan: PollPlan, answers_taken: int) -> bool:
        """The poll ``plan`` asks for must wait for ``next_poll_at``: a failure's
        backoff, or an empty answer that still holds for its types."""
        if now >= self.next_poll_at:
            return False
        empty = self._empty
        return empty is None or empty.holds(now, plan.job_types, answers_taken)

    def maybe_poll(self, now: float, phase: Phase, answers_taken: int) -> PollPlan | None:
        """Request a poll if one is wanted; the plan when it was computed and
        no poll went out (the loop reuses it this tick). ``answers_taken``:
        the report answers the ledger has released so far."""
        if not self.may_poll(phase):
            return None
        if now < self.next_poll_at and self._empty is None:
            return None  # a failure's backoff: no plan needed
        plan = plan_poll(self.pool, self.ledger, self.claims)
        if self._waits(now, plan, answers_taken):
            return plan
        if plan.wanted < min(plan.idle, math.inf if plan.type_cap is None else plan.type_cap):
            self.stats.claims_held_back += 1
        if plan.wanted > 0:
            self._request(now, plan.wanted, plan.job_types, answers_taken)
            return None
        if plan.armed is not None and phase is Phase.RUNNING:
            # Sent by the source's thread once the answers it needs have come.
            after = answers_taken + plan.armed.answers
            self._request(now, plan.armed.jobs, plan.job_types, answers_taken, after=after)
            return None
        return plan

    def _request(
        self, now: float, jobs: int, job_types: list[str], answers_taken: int, after: int = 0
    ) -> None:
        self.requested_at = now
        # An armed poll goes out after ``after`` answers: those are known to it.
        self._asked = (frozenset(job_types), max(answers_taken, after))
        self._source.request(jobs, job_types, after=after)

    def holds_reports(self, now: float) -> bool:
        """A poll is out for less than ``REPORT_HOLD``: reports may wait for it.

        An armed poll waits for report answers: holding reports would stall it.
        """
        held = now - self.requested_at < REPORT_HOLD
        source = self._source
        return source.busy and not source.armed and held

    def healthy(self, now: float, engine_timeout: float) -> bool:
        """The poller is not wedged."""
        # An armed poll waits for reports, which the engine may be slow to
        # take: that is backpressure, not a wedged poller.
        source = self._source
        if source.busy and not source.armed:
            return now - max(self.requested_at, source.sent_at) < engine_timeout * 2 + 5
        return True

    # -- what came in ------------------------------------------------------------------

    def on_result(self, result: PollResult, now: float) -> PollVerdict:
        """Claim the answer's jobs (or note the failure)."""
        self.stats.record_poll(len(result.jobs), result.error is not None)
        if isinstance(result.error, DispatchModeError):
            return PollVerdict.WRONG_DISPATCH
        if result.error is not None:
            wait_s = self._backoff.next_delay()
            self.next_poll_at, self._empty = now + wait_s, None
            self._outage.failed(result.error, wait_s)
            self.last_error = redact_text(describe_exception(result.error))[:ERROR_TEXT_LIMIT]
            return PollVerdict.FAILED
        self.last_ok_at = now
        if self.metrics is not None:
            self.metrics.observe_poll(result.latency, len(result.jobs))
        self._outage.succeeded()
        self._backoff.reset()
        if result.jobs or result.waited:
            self.next_poll_at, self._empty = now, None
        else:
            self.next_poll_at = now + self.poll_interval
            types, answers_taken = self._asked
            self._empty = EmptyAnswer(types, answers_taken, self.next_poll_at)
        for raw in usable_jobs(result.jobs, log, self.metrics):
            self.claim(raw, result.sent_at, now, result.leased)
        return PollVerdict.CLAIMED

    def claim(self, raw: dict[str, Any], poll_sent_at: float, now: float, leased: bool) -> None:
        context = build_context(raw)
        # A Kafka job has no lease: it may run as long as it needs.
        length = lease_seconds(raw) if leased else math.inf
        held = self.ledger.get(context["id"])
        waiting = held.next_attempt if held is not None else None
        verdict = self.ledger.claim(context, poll_sent_at + length, now, length, origin=raw)
        job_id, job_type = context["id"], context["jobType"]
        if verdict is ClaimVerdict.EXPIRED:
            self.stats.skipped_expired += 1
            log.warning(
                "job %s (%s) not started: its lease had already passed (another worker "
                "may have it)",
                job_id,
                job_type,
            )
        elif verdict is ClaimVerdict.RETRY_HELD:
            log.info(
                "job %s (%s): its retry came before the answer to its fail; it starts once "
                "that answer is in",
                job_id,
                job_type,
            )
        elif verdict is ClaimVerdict.RETRY_REDELIVERED:
            self.stats.redeliveries_coalesced += 1
            if waiting is not None and waiting.origin is not None:
                # The delivery it replaces will not run: settled like a
                # duplicate's. (Unreachable with the Kafka source, which
                # hands out no second delivery of a job id before the first
                # is settled, and whose jobs have no lease.)
                self._source.settle(waiting.origin, True)
            log.info(
                "job %s (%s): its held retry was handed out again (its lease passed while "
                "the fail before it was reported); it starts under the new lease",
                job_id,
                job_type,
            )
        elif verdict is ClaimVerdict.DUPLICATE:
            self.stats.redeliveries_coalesced += 1
            # Its one report comes from the run in progress.
            self._source.settle(raw, True)
            entry = self.ledger.get(job_id)
            if entry is not None and entry.redeliveries == 1:
                log.info(
                    "job %s (%s) handed out again by the engine while this supervisor still "
                    "runs it (its lease passed); not started twice, one result will be sent",
                    job_id,
                    job_type,
                )

    def follow_types(self) -> None:
        """Kafka mode: consume the job types the workers serve now
        (``kafka_types``); a claimed job of a type given up is given back.

        Given back, not kept: no worker here can take it, it has no lease to
        end its wait, and it holds ledger room and its partition's commits.
        Its record stays uncommitted, and the group the feeder leaves hands
        its partition to another member, which runs it (or to this
        supervisor again if a worker serves the type later)."""
        source = self._source
        current = source.following
        if current is None:
            return  # it takes whatever each request names (polls)
        wanted = types_to_consume(self.pool, current)
        if wanted != current:
            source.follow(wanted)
            log.info(
                "kafka: the workers serve %s now (new: %s; gone: %s)",
                ", ".join(sorted(wanted)),
                ", ".join(sorted(wanted - current)) or "none",
                ", ".join(sorted(current - wanted)) or "none",
            )
        for entry in self.ledger.claimed():
            if entry.job_type in wanted:
                continue
            self.ledger.release(entry.job_id)
            if entry.origin is not None:
                source.give_back(entry.origin)
            log.info(
                "job %s (%s) not started: no worker serves its type any more; its record "
                "stays uncommitted and goes to the group's next member",
                entry.job_id,
                entry.job_type,
            )

    # -- to the workers ----------------------------------------------------------------

    def dispatch_claimed(self, now: float, config: SupervisorConfig) -> None:
        """Hand claimed jobs to idle workers, oldest claim first. A job no idle
        worker serves, or whose type runs at its ``concurrency`` limit, waits
        (for its lease in poll mode; in Kafka mode until its type is given
        up, ``follow_types``) without holding back the jobs claimed after it."""
        # Asked on most ticks, and mostly no worker is idle: look once.
        idle = self.pool.idle()
        if not idle:
            return
        limits = self.claims.concurrency
        running = self.ledger.by_type(JobState.RUNNING) if limits else {}
        for entry in self.ledger.claimed():
            if not any(slot.state is SlotState.IDLE for slot in idle):
                return
            if now >= entry.lease_end:
                self.ledger.release(entry.job_id)
                self.stats.skipped_expired += 1
                log.warning(
                    "job %s (%s) not started: its lease passed while it waited for a worker",
                    entry.job_id,
                    entry.job_type,
                )
                continue
            job_type = entry.job_type
            if job_type in limits and running.get(job_type, 0) >= limits[job_type]:
                continue
            if self._dispatch(entry, now, idle, config) and limits:
                running[job_type] = running.get(job_type, 0) + 1

    def _dispatch(
        self, entry: JobEntry, now: float, idle: list[WorkerSlot], config: SupervisorConfig
    ) -> bool:
        for slot in idle:
            if slot.state is not SlotState.IDLE or entry.job_type not in slot.job_types:
                continue
            if not slot.start(entry):
                continue  # that worker just died; its sentinel will tell
            self.ledger.start(entry.job_id, slot.number, now, config.job_timeout(entry.job_type))
            log.debug("job %s (%s) sent to worker-%d", entry.job_id, entry.job_type, slot.number)
            return True
        return False

    # -- what leaves -------------------------------------------------------------------

    def drop(self, entry: JobEntry, *, done: bool) -> None:
        """The job leaves the ledger without a report of ours."""
        self.ledger.release(entry.job_id)
        self.settle(entry, done)


__all__ = ["REPORT_HOLD", "Intake", "PollVerdict"]
