"""``SourceStats``: the counters and gauges of a ``KafkaJobSource``.

A module of its own, free of the Kafka client, so that the supervisor's
``/metrics`` collector can name and build it without the ``kafka`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceStats:
    """Counters and gauges of one ``KafkaJobSource`` (a snapshot)."""

    #: Jobs handed out by ``fetch``.
    fetched: int = 0
    #: Records dropped because their dispatch finished within the dedup window.
    duplicates: int = 0
    #: Records held because the same dispatch was running here (done with it).
    held_while_running: int = 0
    #: Other dispatches of a running job, handed out once it finished.
    deferred: int = 0
    #: Records that are not a usable dispatch (skipped, offset committed).
    malformed: int = 0
    #: Offsets committed (one per partition and commit).
    commits: int = 0
    commit_errors: int = 0
    #: Jobs whose result did not reach the engine (their offsets stay uncommitted).
    unfinished: int = 0
    #: Partitions assigned and revoked over the source's life.
    assigned: int = 0
    revoked: int = 0
    #: Gauges, read when the snapshot is taken: jobs handed out and not yet
    #: done or unfinished, and records fetched whose offsets cannot be
    #: committed yet (a job still running holds back every later offset of
    #: its partition, so this can exceed ``in_flight``).
    in_flight: int = 0
    offsets_pending: int = 0
    #: Partitions whose fetching is paused at the pending bound
    #: (``max_pending_per_partition``): an unfinished record holds them back.
    partitions_held_back: int = 0


__all__ = ["SourceStats"]
