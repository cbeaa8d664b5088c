"""The supervisor's Kafka feeder, driven with a stand-in for KafkaJobSource."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.kafka_feeder import KafkaFeeder


class StandInSource:
    def __init__(self) -> None:
        self.fetches: list[int] = []
        self.commits = 0
        self.done: list[str] = []
        self.unfinished: list[str] = []
        self.closed = threading.Event()
        self.idle_fetch = threading.Event()
        self.lock = threading.Lock()
        self.stats = SourceStats(fetched=3, commits=2)

    def fetch(self, max_records: int, timeout: float = 0.0) -> list[dict[str, Any]]:
        with self.lock:
            self.fetches.append(max_records)
        if max_records == 0:
            self.idle_fetch.set()
            return []
        return [{"id": f"j{n}", "jobType": "t"} for n in range(min(max_records, 2))]

    def commit(self, *, asynchronous: bool = True) -> int:
        self.commits += 1
        return 0

    def mark_done(self, job: dict[str, Any]) -> None:
        self.done.append(job["id"])

    def mark_unfinished(self, job: dict[str, Any]) -> None:
        self.unfinished.append(job["id"])

    def close(self) -> None:
        self.closed.set()


def wait_result(feeder: KafkaFeeder, woken: threading.Event) -> Any:
    assert woken.wait(5.0)
    woken.clear()
    result = feeder.take()
    assert result is not None
    return result


def test_a_request_fetches_at_most_what_was_asked_and_answers_like_a_poll() -> None:
    source, woken = StandInSource(), threading.Event()
    feeder = KafkaFeeder(source, woken.set)  # type: ignore[arg-type]
    try:
        feeder.request(1, ["t"])
        assert feeder.busy
        result = wait_result(feeder, woken)
        assert [job["id"] for job in result.jobs] == ["j0"]
        assert result.asked == 1
        assert not result.leased, "Kafka jobs have no lease"
        assert result.waited, "the fetch waited: ask again at once"
        assert not feeder.busy
        assert source.commits >= 1
    finally:
        feeder.close()
    assert source.closed.is_set(), "closing leaves the groups (and commits)"


def test_between_requests_the_groups_are_served_with_paused_partitions() -> None:
    source, woken = StandInSource(), threading.Event()
    feeder = KafkaFeeder(source, woken.set)  # type: ignore[arg-type]
    try:
        assert source.idle_fetch.wait(5.0)
        with source.lock:
            assert set(source.fetches) == {0}
    finally:
        feeder.close()


def test_settle_marks_records_done_or_unfinished() -> None:
    source = StandInSource()
    feeder = KafkaFeeder(source, lambda: None)  # type: ignore[arg-type]
    try:
        feeder.settle({"id": "a"}, True)
        feeder.settle({"id": "b"}, False)
        assert (source.done, source.unfinished) == (["a"], ["b"])
    finally:
        feeder.close()


def test_a_second_request_while_one_is_out_is_a_bug() -> None:
    source = StandInSource()
    feeder = KafkaFeeder(source, lambda: None)  # type: ignore[arg-type]
    try:
        feeder.request(1, ["t"])
        with pytest.raises(RuntimeError):
            feeder.request(1, ["t"])
        deadline = time.monotonic() + 5
        while feeder.take() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        feeder.close()


def test_stats_are_the_sources_snapshot_readable_from_any_thread() -> None:
    source = StandInSource()
    feeder = KafkaFeeder(source, lambda: None)  # type: ignore[arg-type]
    try:
        seen: list[SourceStats] = []
        reader = threading.Thread(target=lambda: seen.append(feeder.stats()))
        reader.start()
        reader.join(5)
        assert seen == [SourceStats(fetched=3, commits=2)]
    finally:
        feeder.close()


def test_a_source_counts_every_change_while_another_thread_reads_its_stats() -> None:
    # No broker: nothing is fetched; workers marking jobs from several
    # threads bump ``unfinished`` while a scrape-like reader polls ``stats``.
    source = KafkaJobSource("127.0.0.1:1", ["t"])
    try:
        threads, per_thread = 4, 200

        def mark(prefix: int) -> None:
            for n in range(per_thread):
                source.mark_unfinished({"id": f"{prefix}-{n}"})

        markers = [threading.Thread(target=mark, args=(t,)) for t in range(threads)]
        for thread in markers:
            thread.start()
        seen: list[int] = []
        while any(thread.is_alive() for thread in markers):
            seen.append(source.stats.unfinished)
        for thread in markers:
            thread.join(5)
        assert seen == sorted(seen), "a counter never goes back"
        assert source.stats == SourceStats(unfinished=threads * per_thread)
    finally:
        source.close()
