"""KafkaJobSource against the real broker when a fetch raises part-way.

A fetch takes records from several consumers, and several records from one;
an exception after some of them were accepted (registered as running,
their offsets tracked) must not drop them: their job ids would be held back
for ever, their partitions' commits frozen, and the records behind them
taken from librdkafka but never handed out.
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.kafka.dispatch import encode_dispatch
from workflow_sdk.kafka.job_dispatch_pb2 import JobDispatchEvent

from .kafka_support import create_topics, dispatch, publish


def fetch_through_errors(
    source: KafkaJobSource, count: int, timeout: float = 30.0
) -> tuple[list[dict[str, Any]], list[Exception]]:
    """Fetch as the supervisor's feeder does: an error is noted and the next
    fetch follows. Until ``count`` jobs came or the deadline passed."""
    jobs: list[dict[str, Any]] = []
    errors: list[Exception] = []
    deadline = time.monotonic() + timeout
    while len(jobs) < count and time.monotonic() < deadline:
        try:
            jobs.extend(source.fetch(10, timeout=0.5))
        except Exception as exc:
            errors.append(exc)
    return jobs, errors


def deeply_nested(job_type: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A dispatch whose payload json.loads cannot parse without a
    RecursionError (not a ValueError): bad input that decodes unexpectedly."""
    value, headers = encode_dispatch(
        dedup_id="deep",
        job_id="deep",
        instance_id="inst-deep",
        step_execution_id="se-deep",
        job_type=job_type,
        retries_remaining=0,
        variables={},
        created_at=None,
    )
    event = JobDispatchEvent.FromString(value)
    event.job_payload = b"[" * 200_000
    try:
        json.loads(event.job_payload)
    except RecursionError:
        pass
    else:  # pragma: no cover - the premise of the test
        raise AssertionError("json.loads parsed a 200,000-deep array")
    return event.SerializeToString(), headers


def test_a_record_that_decodes_with_an_unexpected_error_loses_nothing_around_it(
    kafka_bootstrap: str, unique: str
) -> None:
    """Pins: one fetch takes [good-1, deep, good-2] from one partition;
    good-1 is accepted (registered as running, offset tracked), then decoding
    ``deep`` raises RecursionError. Before the fix the exception left the
    fetch: good-1 was never handed out (its job id held, its offset pending
    for ever) and good-2, already taken from librdkafka, was never seen.
    Now the record is skipped as malformed (committed, counted) and both
    good jobs run."""
    job_type = f"deep-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    publish(
        kafka_bootstrap,
        job_type,
        [
            dispatch(job_type, "good-1", "d1"),
            deeply_nested(job_type),
            dispatch(job_type, "good-2", "d2"),
        ],
    )
    source = KafkaJobSource(kafka_bootstrap, [job_type])
    try:
        jobs, errors = fetch_through_errors(source, 2, timeout=20.0)
        assert sorted(job["id"] for job in jobs) == ["good-1", "good-2"], errors
        assert errors == []
        assert source.stats.malformed == 1
        for job in jobs:
            source.mark_done(job)
        assert source.in_flight == 0
        assert source.commit(asynchronous=False) == 1
        assert source.pending_offsets() == 0
    finally:
        source.close()


class RaisingConsumer:
    """A real consumer whose ``poll`` raises once, when ``armed`` says so."""

    def __init__(self, consumer: Any, armed: Any) -> None:
        self._consumer = consumer
        self._armed = armed
        self.raised = 0

    def poll(self, timeout: float = -1) -> Any:
        if not self.raised and self._armed():
            self.raised += 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "injected by the test"))
        return self._consumer.poll(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_consumer_that_raises_after_another_ones_records_were_accepted_loses_none(
    kafka_bootstrap: str, unique: str
) -> None:
    """Pins: a fetch over two job types accepts the first type's records,
    then the second consumer's poll raises KafkaException. Before the fix the
    exception dropped the accepted jobs: never handed out, their job ids held
    as running and their offsets pending for ever. Now the fetch returns
    them and the error comes with the next fetch."""
    first, second = f"fa-{unique}", f"fb-{unique}"
    create_topics(kafka_bootstrap, [first, second])
    publish(kafka_bootstrap, first, [dispatch(first, f"a{i}", f"da{i}") for i in range(3)])
    source = KafkaJobSource(kafka_bootstrap, [first, second])
    try:
        # Raise in the second consumer once the first one's records are accepted.
        wrapper = RaisingConsumer(source._consumers[second], lambda: source.in_flight > 0)
        source._consumers[second] = wrapper
        # The first type first in every fetch (no rotation), so that the
        # raise comes in the fetch that accepted its records.
        order = [(first, source._consumers[first]), (second, wrapper)]
        source._rotated = lambda selected: order  # type: ignore[method-assign]
        jobs, errors = fetch_through_errors(source, 3, timeout=30.0)
        assert wrapper.raised == 1
        assert sorted(job["id"] for job in jobs) == ["a0", "a1", "a2"], (jobs, errors)
        assert source.in_flight == 3
        # The error is not swallowed: a later fetch raises it.
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            try:
                source.fetch(1, timeout=0.1)
            except KafkaException as exc:
                errors.append(exc)
        assert [str(exc) for exc in errors] and "injected" in str(errors[0])
        for job in jobs:
            source.mark_done(job)
        assert source.commit(asynchronous=False) == 1
        assert source.pending_offsets() == 0
    finally:
        source._consumers[second] = wrapper._consumer
        source.close()
