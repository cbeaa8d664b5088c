"""The supervisor's Kafka feeder, driven with a stand-in for KafkaJobSource."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import Any

import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.config import KafkaConfig
from workflow_sdk.supervisor.io import kafka_feeder
from workflow_sdk.supervisor.io.kafka_feeder import KafkaFeeder


class StandInSource:
    def __init__(self, job_types: Collection[str] = ("t",)) -> None:
        self.brokers = "127.0.0.1:1"
        self.job_types = sorted(job_types)
        self.holding: dict[str, int] = {}
        self.added: list[tuple[str, str | None]] = []
        self.removed: list[str] = []
        self.given_back: list[str] = []
        self.type_changed = threading.Event()
        self.fetched_types: list[set[str] | None] = []
        self.fetches: list[int] = []
        self.commits = 0
        self.done: list[str] = []
        self.unfinished: list[str] = []
        self.closed = threading.Event()
        self.idle_fetch = threading.Event()
        self.lock = threading.Lock()
        self.stats = SourceStats(fetched=3, commits=2)

    def fetch(
        self, max_records: int, timeout: float = 0.0, job_types: set[str] | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            self.fetches.append(max_records)
            if max_records:
                self.fetched_types.append(job_types)
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

    def held(self, job_type: str) -> int:
        with self.lock:
            return self.holding.get(job_type, 0)

    def give_back(self, job: dict[str, Any]) -> None:
        self.given_back.append(job["id"])

    def add_type(self, job_type: str, group: str | None = None) -> None:
        self.added.append((job_type, group))
        self.job_types = sorted({*self.job_types, job_type})
        self.type_changed.set()

    def remove_type(self, job_type: str) -> int:
        self.removed.append(job_type)
        self.job_types = [t for t in self.job_types if t != job_type]
        self.type_changed.set()
        return 0


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


def test_a_request_fetches_only_the_job_types_it_asks_for() -> None:
    """Pins: the feeder ignored the types a request asks for (those its idle
    workers serve) and fetched every type it was built with."""
    source, woken = StandInSource(["a", "b"]), threading.Event()
    feeder = KafkaFeeder(source, woken.set)  # type: ignore[arg-type]
    try:
        feeder.request(2, ["a"])
        wait_result(feeder, woken)
        with source.lock:
            assert source.fetched_types == [{"a"}]
    finally:
        feeder.close()


def test_a_request_for_types_not_consumed_answers_at_once_and_asks_to_wait() -> None:
    source, woken = StandInSource(["a"]), threading.Event()
    feeder = KafkaFeeder(source, woken.set)  # type: ignore[arg-type]
    try:
        feeder.request(1, ["c"])  # its topic is missing, say: not joined
        result = wait_result(feeder, woken)
        assert (result.jobs, result.error, result.waited) == ([], None, False)
        with source.lock:
            assert source.fetched_types == []
    finally:
        feeder.close()


def test_a_type_no_worker_serves_is_left_once_none_of_its_jobs_is_held() -> None:
    """Pins: after a reload that removed a type its group was never left
    (the consumers were those of the first worker's types for ever). It is
    left only once its jobs here are done: leaving earlier would let the
    group's next member run them again while they run here."""
    source = StandInSource(["a", "b"])
    source.holding["b"] = 1  # running on a retiring worker
    feeder = KafkaFeeder(source, lambda: None)  # type: ignore[arg-type]
    try:
        feeder.follow(frozenset({"a"}))
        assert feeder.following == {"a"}
        # Several rounds of the thread's housekeeping: still held, not left.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with source.lock:
                if source.fetches.count(0) >= 5:
                    break
            time.sleep(0.01)
        assert source.removed == []
        with source.lock:
            source.holding["b"] = 0
        assert source.type_changed.wait(5.0)
        assert source.removed == ["b"]
    finally:
        feeder.close()


def test_a_new_type_is_joined_once_its_topic_exists_and_a_missing_one_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: a type the workers serve after a reload was never consumed. Its
    topic is checked first: while it is missing, one ERROR names it and it is
    checked again later; once it exists the group is joined."""
    topics = {"exists": False}
    checked = threading.Event()

    def check_topics(brokers: Any, job_types: Any, config: Any, timeout: float) -> list[str]:
        checked.set()
        return [] if topics["exists"] else [f"workflow.jobs.{t}" for t in job_types]

    monkeypatch.setattr(kafka_feeder, "check_topics", check_topics)
    monkeypatch.setattr(kafka_feeder, "TOPIC_RECHECK", 0.0)
    source = StandInSource(["a"])
    kafka = KafkaConfig(brokers=("b1:9092",), group="g.{job_type}")
    feeder = KafkaFeeder(source, lambda: None, kafka)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.ERROR, logger="workflow_sdk.supervisor"):
            feeder.follow(frozenset({"a", "c"}))
            assert checked.wait(5.0)
            checked.clear()
            assert checked.wait(5.0), "checked again"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "workflow.jobs.c does not exist" in errors[0]
        assert source.added == []
        topics["exists"] = True
        assert source.type_changed.wait(5.0)
        assert source.added == [("c", "g.c")]
    finally:
        feeder.close()


def test_give_back_passes_the_job_to_the_source() -> None:
    source = StandInSource()
    feeder = KafkaFeeder(source, lambda: None)  # type: ignore[arg-type]
    try:
        feeder.give_back({"id": "j"})
        assert source.given_back == ["j"]
    finally:
        feeder.close()
