"""KafkaJobSource.fetch when a consumer call or a record raises part-way (stand-in consumers).

The broker-backed versions are in tests/kafka/test_job_source_faults.py;
these pin the paths a broker cannot be made to take on demand: librdkafka's
``consume`` raising after ``poll`` returned a record, and a record whose
acceptance raises with more records of its batch behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.kafka.dispatch import encode_dispatch

TOPIC = "workflow.jobs.t"


class StandInMessage:
    def __init__(self, offset: int, job_id: str) -> None:
        self._offset = offset
        self._value, self._headers = encode_dispatch(
            dedup_id=f"d-{job_id}",
            job_id=job_id,
            instance_id="i",
            step_execution_id="se",
            job_type="t",
            retries_remaining=0,
            variables={},
            created_at=None,
        )

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class StandInConsumer:
    """Hands out ``queued`` records: one per ``poll``, the rest per ``consume``."""

    def __init__(self, queued: list[StandInMessage], consume_raises: bool = False) -> None:
        self.queued = list(queued)
        self.consume_raises = consume_raises
        self.seeks: list[tuple[str, int, int]] = []

    def poll(self, timeout: float = -1) -> StandInMessage | None:
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[StandInMessage]:
        if self.consume_raises:
            self.consume_raises = False
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "consume failed"))
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0)]

    def commit(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def source() -> Iterator[KafkaJobSource]:
    # No broker: the real consumers are set up, then swapped for stand-ins.
    made = KafkaJobSource("127.0.0.1:1", ["t"])
    for consumer in made._consumers.values():
        consumer.close()
    yield made
    made.close()


def test_a_consume_that_raises_after_poll_returned_a_record_hands_that_record_out(
    source: KafkaJobSource,
) -> None:
    """Pins: ``poll`` returned j0, then ``consume`` raised. Before the fix the
    exception left the fetch with j0 taken from librdkafka and never tracked:
    lost, and a later record's commit would have passed over it."""
    consumer = StandInConsumer([StandInMessage(0, "j0"), StandInMessage(1, "j1")], True)
    source._consumers["t"] = consumer  # type: ignore[assignment]
    assert [job["id"] for job in source.fetch(5)] == ["j0"]
    with pytest.raises(KafkaException, match="consume failed"):
        source.fetch(5)
    assert [job["id"] for job in source.fetch(5)] == ["j1"]


def test_a_record_whose_acceptance_raises_is_put_back_with_those_behind_it(
    source: KafkaJobSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins: a batch [j0, j1, j2] where accepting j1 raises (a bug, say).
    Before the fix j0 was registered as running and dropped with the
    exception, and j1 and j2 were taken but never seen again. Now j0 goes
    out, the partition is sought back to j1, and the error comes next."""
    consumer = StandInConsumer([StandInMessage(n, f"j{n}") for n in range(3)])
    source._consumers["t"] = consumer  # type: ignore[assignment]
    accept = source._accept

    def accept_but_j1(job_type: str, message: Any) -> dict[str, Any] | None:
        if message.offset() == 1:
            raise RuntimeError("a bug in accepting")
        return accept(job_type, message)

    monkeypatch.setattr(source, "_accept", accept_but_j1)
    assert [job["id"] for job in source.fetch(5)] == ["j0"]
    assert consumer.seeks == [(TOPIC, 0, 1)]
    with pytest.raises(RuntimeError, match="a bug in accepting"):
        source.fetch(5)
    assert source.in_flight == 1
