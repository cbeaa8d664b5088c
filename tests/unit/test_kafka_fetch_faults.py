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

from confluent_kafka import KafkaException

from unit.kafka_standins import TOPIC, StandInConsumer, StandInMessage
from workflow_sdk.kafka.consumer import KafkaJobSource


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
