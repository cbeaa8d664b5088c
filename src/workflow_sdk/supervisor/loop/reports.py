"""The report desk: outcomes from the main loop's decision to the engine's answer.

The main loop ``queue``s each job's outcome during a tick and ``flush``es
them to the reporter threads at its end (a failure with the stale check it
must run first). The reporter threads answer through ``on_status``; the
main loop ``take``s the answers and releases the jobs. The desk holds no
policy: when to flush, and what an answer means for the ledger, the source
and the metrics, is the arbiter's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

from workflow_sdk.fate import Fate, FateCheck
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.lease import is_settled
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.staleness import InstanceReader, StaleVerdict, check_job
from workflow_sdk.supervisor.io.reporter import Reporter
from workflow_sdk.supervisor.loop.ledger import JobEntry


class FailCheck:
    """The stale check a failure's report runs first (on a reporter thread).

    Keeps the verdict, so the main loop can count a stale job by its reason.
    """

    def __init__(self, reader: InstanceReader, context: dict[str, Any]) -> None:
        self._reader = reader
        self._context = context
        self.verdict: StaleVerdict | None = None

    def __call__(self) -> StaleVerdict:
        self.verdict = check_job(self._reader, self._context)
        return self.verdict


@dataclass(frozen=True)
class Answer:
    """How one report ended."""

    outcome: Outcome
    status: ReportStatus
    #: the stale verdict's reason (metric label) when ``status`` is STALE
    stale_reason: str = "unknown"

    @property
    def settled(self) -> bool:
        return is_settled(self.status)


class ReportDesk:
    """:param retry_seen: whether the job source has seen the engine's retry of
    a job (as its source gave it): the mark of an applied retryable fail in
    Kafka mode (see ``workflow_sdk.fate``). Reporter threads call it."""

    def __init__(
        self,
        reader: InstanceReader | None,
        wake: Callable[[], None],
        retry_seen: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.reader = reader
        self._wake = wake
        self._retry_seen = retry_seen
        self._outbox: list[tuple[Outcome, JobEntry]] = []
        self._answers: SimpleQueue[tuple[Outcome, ReportStatus]] = SimpleQueue()
        self._checks: dict[str, tuple[FailCheck | None, FateCheck | None]] = {}
        #: Whether an answer wakes the main loop (read by reporter threads;
        #: the loop sets it before it looks at ``answered``).
        self.wake_on_answer = True
        #: Answers queued in all, and taken by the main loop in all: a poll
        #: armed for ``taken + n`` goes out once n more jobs are released.
        self.answers = 0
        self.taken = 0
        self._count_lock = threading.Lock()

    # -- main loop ---------------------------------------------------------------

    def queue(self, outcome: Outcome, entry: JobEntry) -> None:
        self._outbox.append((outcome, entry))

    @property
    def queued(self) -> bool:
        return bool(self._outbox)

    def flush(self, reporter: Reporter) -> None:
        """Hand every queued outcome to the reporter threads."""
        for outcome, entry in self._outbox:
            check: FailCheck | None = None
            fate: FateCheck | None = None
            if self.reader is not None:
                if not outcome.succeeded:
                    check = FailCheck(self.reader, entry.context)
                fate = FateCheck(self.reader, entry.context, self._retry_check(entry))
                self._checks[outcome.job_id] = (check, fate)
            reporter.submit(outcome, entry.lease_end, check, fate)
        self._outbox.clear()

    def _retry_check(self, entry: JobEntry) -> Callable[[], bool] | None:
        retry_seen, origin = self._retry_seen, entry.origin
        if retry_seen is None or origin is None:
            return None
        return lambda: retry_seen(origin)

    def answered(self) -> bool:
        return not self._answers.empty()

    def take(self) -> list[Answer]:
        answers = []
        while not self._answers.empty():
            outcome, status = self._answers.get()
            check, fate = self._checks.pop(outcome.job_id, (None, None))
            reason = "unknown"
            if fate is not None and fate.last is not None and fate.last.fate is Fate.SETTLED:
                reason = fate.last.reason or reason
            elif check is not None and check.verdict is not None and check.verdict.reason:
                reason = check.verdict.reason
            answers.append(Answer(outcome, status, reason))
        self.taken += len(answers)
        return answers

    # -- reporter threads ----------------------------------------------------------

    def on_status(self, outcome: Outcome, status: ReportStatus) -> int:
        """Queue the answer; its number (``answers`` once it is counted)."""
        # Queued before the flag is read: the loop sets the flag before it
        # looks at ``answered``, so one of the two sees the other.
        with self._count_lock:
            self._answers.put((outcome, status))
            self.answers += 1
            count = self.answers
        if self.wake_on_answer:
            self._wake()
        return count


__all__ = ["Answer", "FailCheck", "ReportDesk"]
