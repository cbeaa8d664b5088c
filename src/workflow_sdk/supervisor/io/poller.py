"""Claims jobs from the engine on a thread of its own.

The main loop asks for as many jobs as it has room for (``request``); the
answer comes back through ``take`` after a wake-up call, so a slow engine
never stalls the loop that watches the workers. ``PollOpener`` opens one
(``dispatch = "poll"``, the default source).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.supervisor.io.source import PollResult, SourceThread

log = logging.getLogger("workflow_sdk.supervisor")


class Poller(SourceThread):
    """Claims jobs with the engine's poll (``dispatch = "poll"``)."""

    def __init__(
        self,
        client: WorkerEngineClient,
        worker_id: str,
        wake: Callable[[], None],
        *,
        lease_seconds: int = 0,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        # Asked for in every poll when renewal is on and a length is set, so
        # a job holds that lease from its claim, not only from its first
        # renewal; 0 sends nothing (clients without the parameter still work).
        self._lease_seconds = lease_seconds
        super().__init__("poller", wake)

    def close(self, join_timeout: float | None = None) -> None:
        # One request in flight at most: the client's timeout bounds it.
        timeout = float(getattr(self._client, "timeout", 30.0)) + 1.0
        super().close(timeout if join_timeout is None else join_timeout)

    def _answer(self, max_jobs: int, job_types: tuple[str, ...]) -> PollResult:
        sent_at = time.monotonic()
        try:
            if self._lease_seconds:
                jobs = self._client.poll_jobs(
                    self._worker_id, list(job_types), max_jobs, lease_seconds=self._lease_seconds
                )
            else:
                jobs = self._client.poll_jobs(self._worker_id, list(job_types), max_jobs)
            return PollResult(max_jobs, sent_at, time.monotonic() - sent_at, jobs)
        except WorkflowSDKError as exc:
            return PollResult(max_jobs, sent_at, time.monotonic() - sent_at, error=exc)
        except Exception as exc:  # keep the thread alive whatever the client does
            log.exception("poller: unexpected error")
            error = WorkflowSDKError(f"{type(exc).__name__}: {exc}")
            return PollResult(max_jobs, sent_at, time.monotonic() - sent_at, error=error)


class PollOpener:
    """Opens a ``Poller`` (a ``source.SourceOpener``): the job types come with
    each request, so it starts the same whatever the first worker serves.

    :param make_client: a fresh client for the poller's thread.
    :param lease_seconds: the lease every poll asks for (0: the engine's).
    """

    def __init__(
        self,
        make_client: Callable[[], WorkerEngineClient],
        worker_id: str,
        *,
        lease_seconds: int = 0,
    ) -> None:
        self._make_client = make_client
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds

    def __call__(self, job_types: tuple[str, ...], wake: Callable[[], None]) -> Poller:
        return Poller(self._make_client(), self._worker_id, wake, lease_seconds=self._lease_seconds)


__all__ = ["PollOpener", "PollResult", "Poller"]
