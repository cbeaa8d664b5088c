"""Reports outcomes to the engine from a few threads of the supervisor.

The main loop hands an outcome over and moves on: a slow or failing report
never delays the dispatch of other jobs. Delivery rules (retry a completion,
never resend a fail that may have arrived) are ``workflow_sdk.reporting``'s.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import EngineClientError
from workflow_sdk.fate import IN_FLIGHT_WINDOW, FateCheck
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus, deliver
from workflow_sdk.staleness import StaleVerdict

#: One report: the outcome, the job's lease end, the stale check before a fail,
#: the engine's view of the job should its answer be lost.
_Item = tuple[Outcome, float | None, Callable[[], StaleVerdict] | None, FateCheck | None]

log = logging.getLogger("workflow_sdk.supervisor")


class Reporter:
    def __init__(
        self,
        client: WorkerEngineClient,
        worker_id: str,
        *,
        deadline: float,
        window: float = IN_FLIGHT_WINDOW,
        threads: int = 4,
        on_status: Callable[[Outcome, ReportStatus], None] | None = None,
        on_retry: Callable[[Outcome, EngineClientError], None] | None = None,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._deadline = deadline
        self._window = window
        self._on_status = on_status
        self._on_retry = on_retry
        # SimpleQueue: put and get in C, with no Python-level lock or
        # condition; the main loop puts one outcome per job.
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._give_up = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._threads = [
            threading.Thread(target=self._serve, name=f"reporter-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        outcome: Outcome,
        lease_end: float | None = None,
        stale_check: Callable[[], StaleVerdict] | None = None,
        fate: FateCheck | None = None,
    ) -> None:
        """Queue ``outcome``; a failure is not sent after ``lease_end`` (monotonic),
        nor when ``stale_check`` says the job no longer matters. ``fate`` asks
        the engine what became of a report whose answer was lost. A job with
        no lease (``inf``: Kafka dispatch) is reported until it is settled."""
        with self._idle:
            self._pending += 1
        self._queue.put((outcome, lease_end, stale_check, fate))

    def pending(self) -> int:
        """Outcomes queued or being delivered."""
        with self._idle:
            return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted outcome is delivered or given up."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, give_up: bool) -> None:
        """Stop the threads; with ``give_up``, abandon retries still waiting."""
        if give_up:
            self._give_up.set()
        for _ in self._threads:
            self._queue.put(None)
        # One request in flight per thread at most: the client's timeout
        # bounds the wait for all of them together.
        deadline = time.monotonic() + float(getattr(self._client, "timeout", 30.0)) + 1.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            outcome, lease_end, stale_check, fate = item
            status = ReportStatus.LOST
            no_lease = lease_end is not None and math.isinf(lease_end)
            try:
                status = deliver(
                    self._client,
                    self._worker_id,
                    outcome,
                    deadline=self._deadline,
                    give_up=self._give_up,
                    on_retry=self._on_retry,
                    lease_end=None if no_lease else lease_end,
                    stale_check=stale_check,
                    fate=fate,
                    until_settled=no_lease,
                    window=self._window,
                )
            except Exception:  # a bug here must not silently stop reporting
                log.exception("reporter: unexpected error while reporting %r", outcome)
            try:
                # Always told, even after an unexpected error: the supervisor
                # holds the job until it hears how its report ended.
                if self._on_status is not None:
                    self._on_status(outcome, status)
            except Exception:
                log.exception("reporter: status callback failed for %r", outcome)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()


__all__ = ["Reporter"]
