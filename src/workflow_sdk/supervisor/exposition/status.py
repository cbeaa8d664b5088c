"""What the main loop publishes for the /metrics server's threads: a snapshot of the pool.

The publisher (``loop/publisher.py``) builds a ``PoolSnapshot`` when it
updates the title and the /metrics view (at most every
``PUBLISH_INTERVAL``, and at once when a worker comes or goes or intake is
paused or resumed) and replaces it whole; the server's threads read that
object and never the loop's own, which only the main loop may touch. Times
are the parent's ``time.monotonic()``; the readers turn them into ages.

This module holds data only: what /healthz and /readyz conclude from it is
``health``'s, the /status document ``endpoints``'.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class WorkerView:
    """What a scrape or /status may know about one worker (published by the main loop)."""

    slot: int
    pid: int
    busy: bool
    ps: psutil.Process | None
    #: the slot's state: "booting", "idle", "busy" or "stopping"
    state: str = ""
    job_id: str = ""
    job_type: str = ""
    #: monotonic time its job started (0.0: no job)
    job_started: float = 0.0
    jobs_done: int = 0
    #: its last memory sample (after each job, or the parent's every second)
    rss_bytes: int = 0
    #: Its USS and PSS at the parent's last full memory sample (None: none yet,
    #: or no smaps_rollup on this kernel).
    uss: int | None = None
    pss: int | None = None


@dataclass(frozen=True)
class SourceView:
    """The job source as the intake sees it (the poller, or the Kafka feeder)."""

    #: "poll" or "kafka"
    kind: str
    #: opened (it opens with the first ready worker)
    open: bool = False
    #: monotonic time the request out was sent (0.0: none out; a request that
    #: waits for report answers, ``armed``, is not out yet)
    in_flight_since: float = 0.0
    armed: bool = False
    #: monotonic time of the last answer without an error (0.0: none yet)
    last_ok_at: float = 0.0
    #: failed requests in a row (0: the last answer was good)
    failures: int = 0
    last_error: str = ""
    #: after a failure: when the next request may go (the backoff)
    next_request_at: float = 0.0
    #: the source's thread answers within its bound: the rule that also
    #: withholds systemd's WATCHDOG=1 (``Intake.healthy``)
    responsive: bool = True


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool at one publish (see the module doc)."""

    taken_at: float
    #: the arbiter's phase: "running", "reloading", "draining" or "done"
    phase: str
    #: intake paused (``rochallor-supervisor pause``, SIGUSR2)
    paused: bool
    #: the pool's target size
    target: int
    workers: tuple[WorkerView, ...]
    jobs_held: int
    held_limit: int
    jobs_succeeded: int
    jobs_failed: int
    source: SourceView

    def ready_workers(self) -> int:
        """Workers that have booted and are not leaving (idle or busy)."""
        return sum(1 for w in self.workers if w.state in ("idle", "busy"))


__all__ = ["PoolSnapshot", "SourceView", "WorkerView"]
