"""In-order offset commits: a record's offset is committed only when it and
every earlier record of its partition are done.

"Done" means the job's result reached the engine, or the record was dropped
(a duplicate, stale, malformed) or its job failed for good. A record whose
result never reached the engine stays pending and holds back the commit
position of its partition: after a restart or a rebalance the record and
those behind it are delivered again (at least once), never skipped.

Not thread-safe: the owner (``KafkaJobSource``) serialises the calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: (topic, partition)
TopicPartitionKey = tuple[str, int]

#: Records of one partition held uncommitted at most before fetching from it
#: pauses (``KafkaJobSource``): a record whose job is not finished holds back
#: every later one, and each costs a little memory here.
DEFAULT_MAX_PENDING = 10_000


@dataclass
class _Partition:
    #: Offsets handed out and not yet contiguous-done, ascending.
    pending: deque[int] = field(default_factory=deque)
    #: The same offsets as a set, for membership tests.
    tracked: set[int] = field(default_factory=set)
    #: Pending offsets already done (waiting for an earlier one).
    done: set[int] = field(default_factory=set)
    #: Next offset to commit (last contiguous done + 1), None before any.
    position: int | None = None
    #: The position last committed, None before any commit.
    committed: int | None = None
    #: The position of an asynchronous commit sent and not yet answered.
    sending: int | None = None


class OffsetTracker:
    """Per-partition commit positions that only move over finished records."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}

    def track(self, tp: TopicPartitionKey, offset: int) -> bool:
        """Note a fetched record. False if ``offset`` is not past the last tracked one
        (a record seen again while its partition is still tracked: not a new record)."""
        part = self._partitions.setdefault(tp, _Partition())
        last = part.pending[-1] if part.pending else None
        if (last is not None and offset <= last) or (
            part.position is not None and offset < part.position
        ):
            return False
        part.pending.append(offset)
        part.tracked.add(offset)
        return True

    def done(self, tp: TopicPartitionKey, offset: int) -> bool:
        """Mark a tracked record done. False if it is not tracked (e.g. its
        partition was revoked since: the new owner handles it)."""
        part = self._partitions.get(tp)
        if part is None or offset not in part.tracked or offset in part.done:
            return False
        part.done.add(offset)
        while part.pending and part.pending[0] in part.done:
            first = part.pending.popleft()
            part.done.discard(first)
            part.tracked.discard(first)
            part.position = first + 1
        return True

    def committable(self, *, in_flight: bool = False) -> dict[TopicPartitionKey, int]:
        """Partitions whose commit position moved past the last commit: tp ->
        offset to commit. Not those whose asynchronous commit of that
        position is still unanswered, unless ``in_flight`` (a synchronous
        commit, which must not count on an answer that may be a refusal)."""
        return {
            tp: part.position
            for tp, part in self._partitions.items()
            if part.position is not None
            and (part.committed is None or part.position > part.committed)
            and (in_flight or part.position != part.sending)
        }

    def sending(self, tp: TopicPartitionKey, position: int) -> None:
        """An asynchronous commit of ``position`` went out for ``tp``: not
        offered again until it is answered (``committed`` or ``commit_failed``)."""
        part = self._partitions.get(tp)
        if part is not None:
            part.sending = position

    def committed(self, tp: TopicPartitionKey, position: int) -> bool:
        """Record that the broker took ``position`` for ``tp``. True when it
        moved the committed position (a second answer for the same commit,
        or one for a partition no longer ours, does not)."""
        part = self._partitions.get(tp)
        if part is None:
            return False
        if part.sending is not None and part.sending <= position:
            part.sending = None
        if part.committed is None or position > part.committed:
            part.committed = position
            return True
        return False

    def commit_failed(self, tp: TopicPartitionKey, position: int) -> None:
        """The broker did not take ``position`` for ``tp``: offered again."""
        part = self._partitions.get(tp)
        if part is not None and part.sending == position:
            part.sending = None

    def commits_failed(self) -> None:
        """An asynchronous commit failed without saying for which partitions:
        every unanswered one is offered again."""
        for part in self._partitions.values():
            part.sending = None

    def forget(self, tp: TopicPartitionKey) -> int:
        """Drop a revoked partition; returns how many of its records were unfinished."""
        part = self._partitions.pop(tp, None)
        return 0 if part is None else len(part.pending)

    def pending(self, tp: TopicPartitionKey | None = None) -> int:
        """Records handed out and not yet committable (of ``tp``, or of all partitions)."""
        if tp is not None:
            part = self._partitions.get(tp)
            return 0 if part is None else len(part.pending)
        return sum(len(part.pending) for part in self._partitions.values())

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._partitions)

    def head(self, tp: TopicPartitionKey) -> int | None:
        """The oldest unfinished offset of ``tp`` (what holds back its commits)."""
        part = self._partitions.get(tp)
        return part.pending[0] if part is not None and part.pending else None


class HoldBack:
    """Which partitions are held back: too many records pending behind an
    unfinished one. A verdict object; the source pauses and resumes.

    A partition is held at ``limit`` pending records and released once they
    fall below nine tenths of it (so that it does not flap at the limit).
    """

    def __init__(self, limit: int = DEFAULT_MAX_PENDING) -> None:
        if limit < 1:
            raise ValueError(f"the pending limit must be >= 1, got {limit}")
        self.limit = limit
        self._held: set[TopicPartitionKey] = set()

    def hold(self, tp: TopicPartitionKey, pending: int) -> bool:
        """True when ``tp`` reaches the limit now (it was not held before)."""
        if tp in self._held or pending < self.limit:
            return False
        self._held.add(tp)
        return True

    def release(self, pending_of: dict[TopicPartitionKey, int]) -> list[TopicPartitionKey]:
        """The held partitions whose pending count (``pending_of``; absent = 0)
        fell below the release level: no longer held."""
        level = self.limit * 9 // 10
        freed = [tp for tp in self._held if pending_of.get(tp, 0) < max(1, level)]
        self._held.difference_update(freed)
        return freed

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        self._held.difference_update(tps)

    def __contains__(self, tp: object) -> bool:
        return tp in self._held

    def __len__(self) -> int:
        return len(self._held)

    @property
    def held(self) -> frozenset[TopicPartitionKey]:
        return frozenset(self._held)


__all__ = ["DEFAULT_MAX_PENDING", "HoldBack", "OffsetTracker", "TopicPartitionKey"]
