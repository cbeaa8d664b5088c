"""What the two threaded runners share, as small parts each of them composes.

``Runner`` (poll dispatch) and ``KafkaRunner`` (Kafka dispatch) differ in
where jobs come from and in what a report's fate means to that source. The
rest is the same and lives here once:

- ``Lifecycle``: a runner runs once, until ``stop()``, SIGTERM/SIGINT or
  an external event asks it to stop; the signal handlers while it runs.
- ``Tally``: the counters of a frozen stats dataclass, replaced whole under
  the runner's lock so a reader always gets a consistent snapshot.
- ``WorkerThreads``: a fixed set of daemon threads that run the work handed
  to them, the count of idle ones, and the drain at stop.
- ``run_job``: one job's outcome, whatever its handler does.
- ``report``: ``deliver`` with the stale-job check, counted in a ``Tally``.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.fate import IN_FLIGHT_WINDOW, Fate, FateCheck
from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import Outcome, describe_exception, run_handler
from workflow_sdk.handler.registry import Handler
from workflow_sdk.jobcore import no_handler_outcome
from workflow_sdk.reporting import ReportStatus, deliver
from workflow_sdk.runner.watch import reader_of
from workflow_sdk.staleness import StaleVerdict, check_job

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")
W = TypeVar("W")

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None

#: Seconds ``WorkerThreads.end`` waits for idle threads to end.
_JOIN_AT_END = 5.0

#: The stats counter each report fate adds to (same names in every runner's stats);
#: a delivered report counts as ``completed`` or ``failed``.
_COUNTER_OF = {
    ReportStatus.WITHHELD: "fails_withheld",
    ReportStatus.REJECTED: "reports_rejected",
    ReportStatus.STALE: "stale",
    ReportStatus.LOST: "reports_lost",
}


class Lifecycle:
    """One run of a runner (new -> running -> done) and whether it should stop.

    The stop is asked for by ``request_stop()``, SIGTERM/SIGINT or the run's
    ``stop_event``, by plain assignments: a signal handler runs in the main
    thread between two bytecodes, possibly while the runner's loop holds its
    lock.

    :param what: the runner's class name, for the error of a second run.
    """

    def __init__(self, cond: threading.Condition, what: str) -> None:
        self._cond = cond
        self._what = what
        self._state = "new"  # guarded by ``cond``
        self._requested = False
        #: The signal that asked for the stop, if one did (the runner logs it).
        self.signum: int | None = None
        self._external: threading.Event | None = None

    @contextmanager
    def running(self, stop_event: threading.Event | None) -> Iterator[bool]:
        """The run, once: ``stop_event`` also asks for the stop while it lasts;
        yields whether SIGTERM/SIGINT do (see ``_signals``)."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError(
                    f"a {self._what} runs once; create a new {self._what} to run again"
                )
            self._state = "running"
        self._external = stop_event
        try:
            with self._signals() as by_signal:
                yield by_signal
        finally:
            with self._cond:
                self._state = "done"

    def request_stop(self) -> None:
        """Ask for the stop and wake whatever waits on the runner's condition."""
        self._requested = True
        with self._cond:
            self._cond.notify_all()

    def stopping(self) -> bool:
        if self._requested:
            return True
        external = self._external
        return external is not None and external.is_set()

    @contextmanager
    def _signals(self) -> Iterator[bool]:
        """SIGTERM/SIGINT set the flag while the block runs; yields whether they do.

        Only the main thread may install signal handlers: elsewhere nothing is
        installed (and a stop by signal is not noticed). The previous handlers
        are put back on exit.
        """
        if threading.current_thread() is not threading.main_thread():
            yield False
            return
        previous: dict[int, _SignalHandler] = {}
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            previous[stop_signal] = signal.getsignal(stop_signal)
            signal.signal(stop_signal, self._on_signal)
        try:
            yield True
        finally:
            for signum, handler in previous.items():
                # None: the previous handler was not installed from Python and
                # cannot be put back; the default is the closest.
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Assignments only (see the class): the runner logs the signal.
        self.signum = signum
        self._requested = True


class Tally(Generic[S]):
    """Counters kept in a frozen dataclass, replaced whole under ``cond``."""

    def __init__(self, cond: threading.Condition, initial: S) -> None:
        self._cond = cond
        self._value = initial

    def snapshot(self) -> S:
        with self._cond:
            return self._value

    def count(self, **increments: int) -> None:
        """Add ``increments`` to the counters of those names."""
        with self._cond:
            self.count_locked(**increments)

    def count_locked(self, **increments: int) -> None:
        """``count`` for a caller that holds ``cond`` (to change other state with it)."""
        value = self._value
        self._value = replace(
            value, **{name: getattr(value, name) + n for name, n in increments.items()}
        )


class WorkerThreads(Generic[W]):
    """``size`` daemon threads, each running ``handle(work)`` on the work handed to it.

    ``idle`` (guarded by ``cond``) counts the threads free for new work:
    ``hand()`` takes one, and a thread gives its own back, notifying
    ``cond``, once ``handle`` returns or raises. Daemon threads: a handler
    stuck for ever is abandoned at shutdown instead of hanging it.

    :param name: thread name prefix (``<name>-<index>``).
    :param label: names the runner in the log line of an unexpected error.
    :param job_of: the job a work item is about (its id is logged).
    """

    def __init__(
        self,
        cond: threading.Condition,
        size: int,
        handle: Callable[[W], None],
        *,
        name: str,
        label: str,
        log: logging.Logger,
        job_of: Callable[[W], dict[str, Any]],
    ) -> None:
        self.size = size
        self.idle = size
        self._cond = cond
        self._handle = handle
        self._name = name
        self._label = label
        self._log = log
        self._job_of = job_of
        self._queue: queue.SimpleQueue[W | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def busy(self) -> int:
        """Threads holding work (the caller holds ``cond``)."""
        return self.size - self.idle

    def start(self) -> None:
        for index in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def hand(self, work: W) -> None:
        """Give ``work`` to an idle thread (the caller holds ``cond`` and saw ``idle > 0``)."""
        self.idle -= 1
        self._queue.put(work)

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds until no thread is busy; returns how many still are."""
        drain_end = time.monotonic() + timeout
        with self._cond:
            while self.idle < self.size:
                remaining = drain_end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.size - self.idle

    def end(self, *, join: bool) -> None:
        """Tell every thread to end after its current work; with ``join``, wait a little.

        Idle threads end at once; a thread in a report retry ends as soon as
        the runner's give-up event is set. Do not join threads still running
        a handler: they may never end.
        """
        for _ in self._threads:
            self._queue.put(None)
        if join:
            self.join(_JOIN_AT_END)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end; True when every one has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)

    def _loop(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                self._handle(work)
            except BaseException:
                # Only a bug of ours (or of the metrics or client code) gets
                # here: handler errors are caught in run_job. Keep the thread
                # and its slot alive regardless.
                self._log.exception(
                    "%s: unexpected error while processing job %s",
                    self._label,
                    self._job_of(work).get("id"),
                )
            finally:
                with self._cond:
                    self.idle += 1
                    self._cond.notify_all()


def run_job(
    handler: Handler | None,
    job: dict[str, Any],
    worker_id: str,
    log: logging.Logger,
    *,
    tally: Tally[Any],
    cancel: threading.Event | None = None,
) -> Outcome:
    """The outcome of ``job``: its handler's, or the retryable failure of having
    no handler or of a handler that raised a BaseException (counted in
    ``tally`` as ``handler_crashes``). ``cancel``, when given, is the
    handler's ``cancelEvent``."""
    job_id: str = job["id"]
    job_type: str = job["jobType"]
    if handler is None:
        outcome = no_handler_outcome(job_id, job_type, worker_id)
        log.error("job %s: %s", job_id, outcome.error_message)
        return outcome
    context = build_context(job)
    if cancel is not None:
        context["cancelEvent"] = cancel
    started = time.perf_counter()
    try:
        return run_handler(handler, context)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, WorkerShutdown...
        duration = time.perf_counter() - started
        tally.count(handler_crashes=1)
        log.error(
            "job %s (%s): handler raised %s; the job is failed retryable and the runner goes on",
            job_id,
            job_type,
            type(exc).__name__,
            exc_info=True,
        )
        return Outcome.failure(
            job_id, job_type, describe_exception(exc), retryable=True, duration=duration
        )


def report(
    client: WorkerEngineClient,
    worker_id: str,
    outcome: Outcome,
    job: dict[str, Any],
    tally: Tally[Any],
    *,
    deadline: float,
    give_up: threading.Event,
    on_retry: Callable[[Outcome, Exception], None] | None = None,
    lease_end: float | None = None,
    until_settled: bool = False,
    retry_seen: Callable[[], bool] | None = None,
    window: float = IN_FLIGHT_WINDOW,
) -> tuple[ReportStatus, str]:
    """Deliver ``outcome`` (see ``reporting.deliver``) and count its fate in ``tally``.

    Before a fail the engine is asked whether the job still matters, and
    after a lost answer what became of the report, when ``client`` can read
    instances (a bare ``WorkerEngineClient`` cannot: its reports follow the
    plain rules). ``until_settled`` and ``retry_seen``: a job with no lease
    (Kafka dispatch; see ``deliver``). Returns the status and, for STALE, the
    reason.
    """
    verdicts: list[StaleVerdict] = []
    stale_check = None
    fate = None
    reader = reader_of(client)
    if reader is not None:
        fate = FateCheck(reader, job, retry_seen)

        def stale_check() -> StaleVerdict:
            verdict = check_job(reader, job)
            verdicts.append(verdict)
            return verdict

    status = deliver(
        client,
        worker_id,
        outcome,
        deadline=deadline,
        give_up=give_up,
        on_retry=on_retry,
        lease_end=lease_end,
        stale_check=stale_check,
        fate=fate,
        until_settled=until_settled,
        window=window,
    )
    if outcome.retire:
        pass  # not the handler's result: the caller counted the job as stale
    elif status is ReportStatus.DELIVERED:
        tally.count(**{"completed" if outcome.succeeded else "failed": 1})
    else:
        tally.count(**{_COUNTER_OF[status]: 1})
    settled = fate.last if fate is not None else None
    if status is ReportStatus.STALE and settled is not None and settled.fate is Fate.SETTLED:
        return status, settled.reason
    return status, (verdicts[-1].reason if verdicts else "")


__all__ = ["Lifecycle", "Tally", "WorkerThreads", "report", "run_job"]
