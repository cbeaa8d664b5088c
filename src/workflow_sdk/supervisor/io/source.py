"""Where the supervisor's jobs come from: the seam between poll and Kafka dispatch.

Everything after a job arrives (the ledger, the stale-job guard, the worker
pool, reporting, metrics, drain and reload) is the same for both sources.
A source works on a thread of its own and talks to the main loop the same
way: ``request`` as many jobs as there is room for, ``take`` the answer
after a wake-up, and ``settle`` each job once its fate is known (Kafka
commits a record's offset only then; the poll source has nothing to do).

A source is opened once the first worker is ready (``SourceOpener``: the
job types it serves are known then; Kafka subscribes to them). Until then
the intake holds ``NOT_OPEN``, a source that is never asked for jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Protocol

from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.kafka.stats import SourceStats


@dataclass(frozen=True)
class PollResult:
    """A source's answer to one request (a poll, or a Kafka fetch)."""

    asked: int
    #: ``time.monotonic()`` just before the request was sent (lease arithmetic).
    sent_at: float
    latency: float
    jobs: list[dict[str, Any]] = field(default_factory=list)
    error: WorkflowSDKError | None = None
    #: the jobs carry a lease (``lockedAt``/``lockExpiresAt``); Kafka jobs do not
    leased: bool = True
    #: the source already waited for jobs: ask again at once, even if it had none
    waited: bool = False


class JobSource(Protocol):
    @property
    def busy(self) -> bool:
        """A request is out and its answer not yet taken."""
        ...

    def request(self, max_jobs: int, job_types: Sequence[str], after: int = 0) -> None:
        """Ask for up to ``max_jobs``; with ``after``, only once that many
        report answers have come in all (``answered``): the room those
        answers free is what the request counts on."""
        ...

    @property
    def armed(self) -> bool:
        """The request waits for report answers (not sent yet)."""
        ...

    def answered(self, count: int) -> None:
        """``count`` report answers have come in all (reporter threads)."""
        ...

    @property
    def sent_at(self) -> float:
        """``time.monotonic()`` when the last request went out."""
        ...

    def disarm(self) -> bool:
        """Withdraw a request still waiting for its report answers; False if
        it already went out (its answer will come)."""
        ...

    def take(self) -> PollResult | None: ...

    def settle(self, job: dict[str, Any], done: bool) -> None:
        """``job`` (as the source gave it) is finished: its result reached the
        engine, it was dropped as stale, or it failed for good (``done``); or
        it was given up and must be delivered again (not ``done``)."""
        ...

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        """Whether the engine's next dispatch of ``job`` (fewer retries) came
        in while ``job`` was still held. Any thread."""
        ...

    @property
    def following(self) -> frozenset[str] | None:
        """The job types it consumes, when it consumes by type (Kafka: one
        group each); None when each request names its own (polls)."""
        ...

    def follow(self, job_types: frozenset[str]) -> None:
        """Consume ``job_types`` from now on (sources that consume by type)."""
        ...

    def give_back(self, job: dict[str, Any]) -> None:
        """A job handed out that will not start here: delivered to someone else."""
        ...

    def stats(self) -> SourceStats:
        """Its counters (the Kafka source's; zeros for others). Any thread."""
        ...

    def close(self) -> None: ...


class SourceUnavailableError(WorkflowSDKError):
    """A source cannot be opened; ``config_error``: an operator's mistake
    (exit status 2), else the brokers or the engine did not answer (1)."""

    def __init__(self, message: str, *, config_error: bool = False) -> None:
        super().__init__(message)
        self.config_error = config_error


class SourceOpener(Protocol):
    """Opens the job source once the first worker is ready.

    ``job_types``: the types that worker serves; ``wake``: makes the main
    loop's wait return (the source calls it when an answer is ready).
    :raises SourceUnavailableError: jobs cannot be taken (the supervisor stops).
    """

    def __call__(self, job_types: tuple[str, ...], wake: Callable[[], None]) -> JobSource: ...


class SourceThread:
    """One request at a time, answered on a thread of its own.

    The main loop calls ``request``, then ``take`` after the wake-up;
    ``busy`` is true in between. A request may wait for report answers
    (``after``): the thread sends it as soon as the last of them comes, with
    no round through the main loop. A subclass answers in ``_answer`` (on the
    thread), may do housekeeping in ``_idle`` every ``idle_every`` seconds
    while no request is out, and releases what it holds in ``_finish`` when
    the thread ends. It sets its own attributes before calling
    ``super().__init__``, which starts the thread.
    """

    #: Seconds between ``_idle`` calls while no request is out; None = never.
    idle_every: float | None = None

    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._cond = threading.Condition()
        self._request: tuple[int, tuple[str, ...]] | None = None
        #: report answers the request waits for (a count of ``answered``)
        self._after = 0
        self._answered = 0
        #: ``time.monotonic()`` when the thread last sent a request
        self.sent_at = 0.0
        self._busy = False
        self._closed = False
        self.results: SimpleQueue[PollResult] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is out and its answer not yet taken."""
        return self._busy

    def request(self, max_jobs: int, job_types: Sequence[str], after: int = 0) -> None:
        with self._cond:
            if self._busy or self._closed:
                raise RuntimeError(f"{self._thread.name}: a request is already in flight")
            self._busy = True
            self._request = (max_jobs, tuple(job_types))
            self._after = after
            if self._answered >= after:
                self._cond.notify()

    @property
    def armed(self) -> bool:
        """The request waits for report answers (not sent yet)."""
        return self._request is not None and self._answered < self._after

    def answered(self, count: int) -> None:
        # A reporter thread, after the answer numbered ``count`` is queued
        # for the main loop: when the request goes out, the answers it waited
        # for are there to be taken before its jobs. Threads may call in any
        # order: the highest count is the one that holds.
        with self._cond:
            if count <= self._answered:
                return
            self._answered = count
            if self._request is not None and count >= self._after:
                self._cond.notify()

    def disarm(self) -> bool:
        with self._cond:
            if self._request is None or self._answered >= self._after:
                return False
            self._request = None
            self._busy = False
            return True

    def take(self) -> PollResult | None:
        """The answer to the request, once it came (call from the main loop)."""
        if self.results.empty():
            return None
        result = self.results.get()
        self._busy = False
        return result

    def settle(self, job: dict[str, Any], done: bool) -> None:
        """Nothing to do by default (see ``JobSource.settle``)."""

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        """Polled jobs: never known here (a retry is claimed like any job)."""
        return False

    @property
    def following(self) -> frozenset[str] | None:
        """None: each request names its job types (see ``JobSource``)."""
        return None

    def follow(self, job_types: frozenset[str]) -> None:
        """Nothing to follow: each request names its job types."""

    def give_back(self, job: dict[str, Any]) -> None:
        """Nothing to do: a polled job not started comes back after its lease."""

    def stats(self) -> SourceStats:
        return SourceStats()

    def close(self, join_timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=join_timeout)

    def _due(self) -> bool:
        """A request is waiting and its report answers have come (lock held)."""
        return self._request is not None and self._answered >= self._after

    def _answer(self, max_jobs: int, job_types: tuple[str, ...]) -> PollResult:
        raise NotImplementedError

    def _idle(self) -> None:
        """Housekeeping while no request is out (every ``idle_every`` s)."""

    def _finish(self) -> None:
        """The thread is ending: release what the source holds."""

    def _serve(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._closed and not self._due():
                        self._cond.wait(self.idle_every)
                    if self._closed:
                        return
                    request = None
                    if self._due():
                        request, self._request = self._request, None
                if request is None:
                    self._idle()
                    continue
                self.sent_at = time.monotonic()
                self.results.put(self._answer(*request))
                self._wake()
        finally:
            self._finish()


class NotOpen:
    """The source before it is opened: never busy, never asked for jobs (the
    intake asks only an open source), settles and counts nothing."""

    busy = False
    armed = False
    sent_at = 0.0
    following = None

    def request(self, max_jobs: int, job_types: Sequence[str], after: int = 0) -> None:
        raise RuntimeError("the job source is not open yet")

    def answered(self, count: int) -> None:
        """Counted by the intake, handed to the source once it opens."""

    def disarm(self) -> bool:
        return False

    def take(self) -> PollResult | None:
        return None

    def settle(self, job: dict[str, Any], done: bool) -> None:
        """Nothing was handed out."""

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        return False

    def follow(self, job_types: frozenset[str]) -> None:
        """Nothing to follow yet."""

    def give_back(self, job: dict[str, Any]) -> None:
        """Nothing was handed out."""

    def stats(self) -> SourceStats:
        return SourceStats()

    def close(self) -> None:
        """Nothing to close."""


#: The one source that is not open (see ``NotOpen``).
NOT_OPEN: JobSource = NotOpen()

__all__ = [
    "NOT_OPEN",
    "JobSource",
    "NotOpen",
    "PollResult",
    "SourceOpener",
    "SourceThread",
    "SourceUnavailableError",
]
