"""The in-order offset tracker and the dedup window, without a broker."""

from __future__ import annotations

import pytest

from workflow_sdk.kafka.dedup import DedupWindow
from workflow_sdk.kafka.offsets import HoldBack, OffsetTracker

TP = ("workflow.jobs.t", 0)
OTHER = ("workflow.jobs.t", 1)


def test_an_offset_commits_only_when_every_earlier_record_is_done() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        assert tracker.track(TP, offset)
    assert tracker.done(TP, 7)
    assert tracker.done(TP, 6)
    assert tracker.committable() == {}  # 5 still runs
    assert tracker.done(TP, 5)
    assert tracker.committable() == {TP: 8}
    assert tracker.pending() == 0


def test_a_commit_position_is_offered_once_and_moves_on() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(TP, 1)
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 1}
    tracker.committed(TP, 1)
    assert tracker.committable() == {}
    tracker.done(TP, 1)
    assert tracker.committable() == {TP: 2}


def test_gaps_in_offsets_do_not_block_the_commit() -> None:
    # Compaction and transaction markers leave holes: only fetched records count.
    tracker = OffsetTracker()
    tracker.track(TP, 10)
    tracker.track(TP, 14)
    tracker.done(TP, 14)
    tracker.done(TP, 10)
    assert tracker.committable() == {TP: 15}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(OTHER, 0)
    tracker.done(OTHER, 0)
    assert tracker.committable() == {OTHER: 1}
    assert tracker.pending(TP) == 1


def test_untracked_or_repeated_marks_are_refused() -> None:
    tracker = OffsetTracker()
    assert not tracker.done(TP, 3)
    tracker.track(TP, 3)
    assert not tracker.track(TP, 3)  # the same record again is not a new one
    assert not tracker.track(TP, 2)
    assert tracker.done(TP, 3)
    assert not tracker.done(TP, 3)
    assert not tracker.track(TP, 3)  # behind the commit position


def test_forget_drops_a_revoked_partition_and_counts_its_unfinished_records() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(TP, 1)
    tracker.done(TP, 1)
    assert tracker.forget(TP) == 2
    assert not tracker.done(TP, 0)  # finishes after the revoke: the new owner decides
    assert tracker.committable() == {}
    assert tracker.track(TP, 0)  # the partition came back: its records are new again


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_dedup_window_forgets_ids_after_its_time() -> None:
    clock = FakeClock()
    window = DedupWindow(seconds=60, clock=clock)
    window.add("d1")
    clock.now += 59
    assert window.seen("d1")
    assert not window.seen("d2")
    clock.now += 2
    assert not window.seen("d1")
    assert len(window) == 0


def test_the_dedup_window_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    window = DedupWindow(seconds=600, max_entries=3, clock=FakeClock())
    for dedup_id in ("a", "b", "c", "d"):
        window.add(dedup_id)
    assert not window.seen("a")
    assert all(window.seen(i) for i in ("b", "c", "d"))
    assert len(window) == 3


def test_an_empty_or_missing_dedup_id_is_never_a_duplicate() -> None:
    window = DedupWindow()
    window.add("")
    assert not window.seen("")
    assert not window.seen(None)


def test_a_zero_window_disables_deduplication() -> None:
    window = DedupWindow(seconds=0)
    window.add("d1")
    assert not window.seen("d1")


@pytest.mark.parametrize(("seconds", "entries"), [(-1, 10), (10, 0)])
def test_bad_window_settings_are_refused(seconds: float, entries: int) -> None:
    with pytest.raises(ValueError, match="dedup window"):
        DedupWindow(seconds=seconds, max_entries=entries)


def test_hold_back_holds_at_the_limit_once_and_releases_below_nine_tenths() -> None:
    hold = HoldBack(limit=10)
    tp = ("workflow.jobs.t", 0)
    assert not hold.hold(tp, 9)
    assert hold.hold(tp, 10)
    assert not hold.hold(tp, 11), "held already: said once"
    assert tp in hold and len(hold) == 1
    assert hold.release({tp: 9}) == []  # not below 9 (nine tenths of 10)
    assert hold.release({tp: 8}) == [tp]
    assert tp not in hold
    assert hold.hold(tp, 10)
    hold.forget({tp})
    assert len(hold) == 0


def test_hold_back_of_one_releases_when_nothing_is_pending() -> None:
    hold = HoldBack(limit=1)
    tp = ("t", 3)
    assert hold.hold(tp, 1)
    assert hold.release({tp: 1}) == []
    assert hold.release({}) == [tp]


def test_the_tracker_names_the_head_that_holds_a_partition_back() -> None:
    tracker = OffsetTracker()
    tp = ("t", 0)
    assert tracker.head(tp) is None
    for offset in (5, 6, 7):
        tracker.track(tp, offset)
    tracker.done(tp, 6)
    assert tracker.head(tp) == 5
    tracker.done(tp, 5)
    assert tracker.head(tp) == 7
