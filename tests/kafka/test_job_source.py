"""KafkaJobSource against the real broker: capacity, in-order commits, dedup, topics."""

from __future__ import annotations

import logging
import time

import pytest

from workflow_sdk.kafka.consumer import RECORD_KEY, KafkaJobSource, check_topics

from .kafka_support import create_topics, dispatch, drain_nothing, fetch_until, publish


def test_fetch_never_returns_more_than_asked_and_pauses_at_zero(
    kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"cap-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    publish(kafka_bootstrap, job_type, [dispatch(job_type, f"j{i}", f"d{i}") for i in range(5)])
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        first = fetch_until(source, 2, batch=2)
        assert [job["id"] for job in first] == ["j0", "j1"]
        # No capacity: nothing is handed out, however long we keep serving the group.
        for _ in range(5):
            assert source.fetch(0, timeout=0.2) == []
        rest = fetch_until(source, 3)
        assert [job["id"] for job in rest] == ["j2", "j3", "j4"]
        assert source.in_flight == 5
        job = rest[0]
        assert job["jobType"] == job_type
        assert job["instanceId"] == "inst-j2"
        assert job[RECORD_KEY]["topic"] == f"workflow.jobs.{job_type}"
    finally:
        source.close()


def test_offsets_commit_in_order_and_unfinished_records_come_back(
    kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"order-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    publish(kafka_bootstrap, job_type, [dispatch(job_type, f"j{i}", f"d{i}") for i in range(3)])
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        jobs = fetch_until(source, 3)
        assert (source.stats.in_flight, source.stats.offsets_pending) == (3, 3)
        source.mark_done(jobs[0])
        source.mark_unfinished(jobs[1])  # its report never reached the engine
        source.mark_done(jobs[2])
        # j1 holds back its own offset and j2's: a restart delivers both again.
        assert (source.stats.in_flight, source.stats.offsets_pending) == (0, 2)
        assert source.commit(asynchronous=False) == 1  # up to j0 only
    finally:
        source.close()
    again = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        redelivered = fetch_until(again, 2)
        assert [job["id"] for job in redelivered] == ["j1", "j2"]
        for job in redelivered:
            again.mark_done(job)
        assert again.commit(asynchronous=False) == 1
    finally:
        again.close()
    third = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        assert drain_nothing(third, 3.0) == []
    finally:
        third.close()


def test_a_duplicate_dispatch_is_held_while_running_and_dropped_once_done(
    kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"dup-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    record = dispatch(job_type, "j1", "dedup-1")
    publish(kafka_bootstrap, job_type, [record, record])
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        jobs = fetch_until(source, 1)
        assert [job["id"] for job in jobs] == ["j1"]
        assert drain_nothing(source, 2.0) == []  # the copy waits for the running job
        assert source.stats.held_while_running == 1
        source.mark_done(jobs[0])
        assert source.commit(asynchronous=False) == 1
        assert source.pending_offsets() == 0  # both records committable
        publish(kafka_bootstrap, job_type, [record])  # the relay publishes it once more
        assert drain_nothing(source, 3.0) == []
        assert source.stats.duplicates == 1
    finally:
        source.close()


def test_a_malformed_record_is_skipped_and_committed(kafka_bootstrap: str, unique: str) -> None:
    job_type = f"bad-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    publish(
        kafka_bootstrap,
        job_type,
        [(b"\xff\xff garbage", [("dedup-id", b"x")]), dispatch(job_type, "j1", "d1")],
    )
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        jobs = fetch_until(source, 1)
        assert [job["id"] for job in jobs] == ["j1"]
        assert source.stats.malformed == 1
        source.mark_done(jobs[0])
        assert source.commit(asynchronous=False) == 1
        assert source.pending_offsets() == 0
    finally:
        source.close()


def test_check_topics_names_the_missing_ones(kafka_bootstrap: str, unique: str) -> None:
    present, absent = f"here-{unique}", f"absent-{unique}"
    create_topics(kafka_bootstrap, [present])
    assert check_topics(kafka_bootstrap, [present, absent]) == [f"workflow.jobs.{absent}"]
    assert check_topics([kafka_bootstrap], [present]) == []


def test_a_rebalance_commits_what_is_done_before_the_partitions_move(
    kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"rebal-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=2)
    for key in (b"a", b"b", b"c", b"d"):
        publish(
            kafka_bootstrap,
            job_type,
            [dispatch(job_type, f"old-{key.decode()}", f"d-{key.decode()}")],
            key=key,
        )
    first = KafkaJobSource(kafka_bootstrap, [job_type])
    second: KafkaJobSource | None = None
    try:
        old = fetch_until(first, 4)
        assert sorted(job["id"] for job in old) == ["old-a", "old-b", "old-c", "old-d"]
        for job in old:
            first.mark_done(job)  # done, not committed yet
        second = KafkaJobSource(kafka_bootstrap, [job_type])
        # Both members take part in the rebalance; the first commits on revoke.
        handed_out: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (first.stats.revoked and second.stats.assigned):
            handed_out += first.fetch(10, timeout=0.1) + second.fetch(10, timeout=0.1)
        assert first.stats.revoked and second.stats.assigned
        for key in (b"a", b"b", b"c", b"d"):
            publish(
                kafka_bootstrap,
                job_type,
                [dispatch(job_type, f"new-{key.decode()}", f"n-{key.decode()}")],
                key=key,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(handed_out) < 4:
            handed_out += first.fetch(10, timeout=0.1) + second.fetch(10, timeout=0.1)
        assert sorted(str(job["id"]) for job in handed_out) == ["new-a", "new-b", "new-c", "new-d"]
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_new_dispatch_of_a_running_job_waits_for_that_run(
    kafka_bootstrap: str, unique: str
) -> None:
    # After a retryable fail the engine publishes a new dispatch at once; it
    # can be fetched before the failed run is marked done. It must still run.
    job_type = f"defer-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    publish(kafka_bootstrap, job_type, [dispatch(job_type, "j1", "first")])
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        [first] = fetch_until(source, 1)
        publish(kafka_bootstrap, job_type, [dispatch(job_type, "j1", "retry")])
        assert drain_nothing(source, 2.0) == []
        assert source.stats.deferred == 1
        source.mark_done(first)
        [retry] = fetch_until(source, 1)
        assert (retry["id"], retry["dedupId"]) == ("j1", "retry")
        source.mark_done(retry)
        assert source.commit(asynchronous=False) == 1
        assert source.pending_offsets() == 0
    finally:
        source.close()


def test_a_partition_held_back_at_the_pending_bound_pauses_until_its_head_is_done(
    kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16 bug 1's bound: one unfinished record held back every later
    offset of its partition while fetching went on (100,001 offsets held
    after 100,000 jobs). At ``max_pending_per_partition`` the partition's
    fetching pauses, a gauge and one WARNING say why, and it resumes once
    the head record is done."""
    job_type = f"hold-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=1)
    publish(kafka_bootstrap, job_type, [dispatch(job_type, f"j{i}", f"d{i}") for i in range(8)])
    source = KafkaJobSource(kafka_bootstrap, [job_type], max_pending_per_partition=3)
    caplog.set_level(logging.INFO, logger="workflow_sdk.kafka")
    try:
        first = fetch_until(source, 3, batch=1)
        assert [job["id"] for job in first] == ["j0", "j1", "j2"]
        source.mark_done(first[1])
        source.mark_done(first[2])  # j0 is still unfinished: it holds back j1, j2
        assert source.stats.partitions_held_back == 1
        assert drain_nothing(source, 2.0) == []
        held = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
        assert len(held) == 1 and "offset 0" in held[0] and "job j0" in held[0], held
        source.mark_done(first[0])
        rest = fetch_until(source, 5)
        assert [job["id"] for job in rest] == ["j3", "j4", "j5", "j6", "j7"]
        assert any("no longer held back" in r.getMessage() for r in caplog.records)
        for job in rest:
            source.mark_done(job)
        assert drain_nothing(source, 0.5) == []  # a fetch releases what moved on
        assert source.stats.partitions_held_back == 0
    finally:
        source.close()
