"""Where the supervisor's jobs come from: the seam between poll and Kafka dispatch.

Everything after a job arrives (the ledger, the stale-job guard, the worker
pool, reporting, metrics, drain and reload) is the same for both sources.
A source works on a thread of its own and talks to the main loop the same
way: ``request`` as many jobs as there is room for, ``take`` the answer
after a wake-up, and ``settle`` each job once its fate is known (Kafka
commits a record's offset only then; the poll source has nothing to do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from workflow_sdk.supervisor.poller import PollResult


class JobSource(Protocol):
    @property
    def busy(self) -> bool:
        """A request is out and its answer not yet taken."""
        ...

    def request(self, max_jobs: int, job_types: Sequence[str]) -> None: ...

    def take(self) -> PollResult | None: ...

    def settle(self, job: dict[str, Any], done: bool) -> None:
        """``job`` (as the source gave it) is finished: its result reached the
        engine, it was dropped as stale, or it failed for good (``done``); or
        it was given up and must be delivered again (not ``done``)."""
        ...

    def close(self) -> None: ...


__all__ = ["JobSource"]
