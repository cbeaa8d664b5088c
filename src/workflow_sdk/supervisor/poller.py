"""Claims jobs from the engine on a thread of its own.

The main loop asks for exactly as many jobs as it has idle workers
(``request``); the answer comes back through ``results`` and a wake-up call,
so a slow engine never stalls the loop that watches the workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import WorkflowSDKError

log = logging.getLogger("workflow_sdk.supervisor")


@dataclass(frozen=True)
class PollResult:
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


class Poller:
    def __init__(
        self,
        client: WorkerEngineClient,
        worker_id: str,
        wake: Callable[[], None],
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._wake = wake
        self._cond = threading.Condition()
        self._request: tuple[int, tuple[str, ...]] | None = None
        self._busy = False
        self._closed = False
        self.results: SimpleQueue[PollResult] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="poller", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A poll was requested and its result not yet taken from ``results``."""
        return self._busy

    def request(self, max_jobs: int, job_types: Sequence[str]) -> None:
        with self._cond:
            if self._busy or self._closed:
                raise RuntimeError("a poll is already in flight")
            self._busy = True
            self._request = (max_jobs, tuple(job_types))
            self._cond.notify()

    def take(self) -> PollResult | None:
        """The finished poll's result, if any (call from the main loop)."""
        if self.results.empty():
            return None
        result = self.results.get()
        self._busy = False
        return result

    def settle(self, job: dict[str, Any], done: bool) -> None:
        """Nothing to do: the engine tracks a polled job through its lease."""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=float(getattr(self._client, "timeout", 30.0)) + 1.0)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                assert self._request is not None
                max_jobs, job_types = self._request
                self._request = None
            sent_at = time.monotonic()
            try:
                jobs = self._client.poll_jobs(self._worker_id, list(job_types), max_jobs)
                result = PollResult(max_jobs, sent_at, time.monotonic() - sent_at, jobs)
            except WorkflowSDKError as exc:
                result = PollResult(max_jobs, sent_at, time.monotonic() - sent_at, error=exc)
            except Exception as exc:  # keep the thread alive whatever the client does
                log.exception("poller: unexpected error")
                error = WorkflowSDKError(f"{type(exc).__name__}: {exc}")
                result = PollResult(max_jobs, sent_at, time.monotonic() - sent_at, error=error)
            self.results.put(result)
            self._wake()


__all__ = ["PollResult", "Poller"]
