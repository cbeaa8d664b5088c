"""``SourceStats``: the counters of a ``KafkaJobSource``.

A module of its own, free of the Kafka client, so that the supervisor's
``/metrics`` collector can name and build it without the ``kafka`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceStats:
    """Counters of one ``KafkaJobSource`` (a snapshot)."""

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


__all__ = ["SourceStats"]
