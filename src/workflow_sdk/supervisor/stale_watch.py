"""Asks the engine, on a thread of its own, whether running jobs still matter.

The main loop requests a check for each job that has run longer than
``stale_check_interval`` (one instance GET, plus the history only while the
instance is active; see ``workflow_sdk.staleness``) and takes the verdicts
back through ``take`` after a wake-up, so a slow engine never stalls the
loop that watches the workers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from workflow_sdk.staleness import InstanceReader, JobLiveness, StaleVerdict, check_job

log = logging.getLogger("workflow_sdk.supervisor")


class StaleWatcher:
    def __init__(self, client: InstanceReader, wake: Callable[[], None]) -> None:
        self._client = client
        self._wake = wake
        self._requests: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._verdicts: SimpleQueue[tuple[str, StaleVerdict]] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="stale-watch", daemon=True)
        self._thread.start()

    def request(self, job_id: str, context: dict[str, Any]) -> None:
        self._requests.put((job_id, context))

    def take(self) -> list[tuple[str, StaleVerdict]]:
        """Verdicts that arrived since the last call (main loop only)."""
        verdicts = []
        while not self._verdicts.empty():
            verdicts.append(self._verdicts.get())
        return verdicts

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=float(getattr(self._client, "timeout", 30.0)) * 2 + 1.0)

    def _serve(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            job_id, context = item
            try:
                verdict = check_job(self._client, context)
            except Exception as exc:  # keep the thread alive whatever the client does
                log.exception("stale check of job %s: unexpected error", job_id)
                verdict = StaleVerdict(JobLiveness.UNKNOWN, "", repr(exc))
            self._verdicts.put((job_id, verdict))
            self._wake()


__all__ = ["StaleWatcher"]
