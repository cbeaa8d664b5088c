"""KafkaJobSource's offset commits and the broker's answers (stand-in consumers).

An asynchronous commit is answered later, inside a ``poll``, and the broker
may refuse it (``ILLEGAL_GENERATION`` while the group rebalances, a
coordinator moving or down). A broker cannot be made to refuse a commit on
demand, so these pin the answers with a stand-in that delivers them the way
librdkafka does: through the ``on_commit`` callback of the consumer's
configuration, during a later ``poll``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")

from confluent_kafka import KafkaError, TopicPartition

from unit.kafka_standins import TOPIC, StandInConsumer, StandInMessage
from workflow_sdk.kafka.consumer import KafkaJobSource


@dataclass
class Answered:
    """A partition of a commit's answer, as librdkafka hands it to ``on_commit``."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class AnsweringConsumer(StandInConsumer):
    """Records commits; the answer to an asynchronous one is given by
    ``answer`` and delivered by the next ``poll``."""

    def __init__(self, on_commit: Callable[..., None], queued: list[StandInMessage]) -> None:
        super().__init__(queued)
        self.on_commit = on_commit
        self.sent: list[tuple[list[tuple[str, int, int]], bool]] = []
        self.answers: list[tuple[KafkaError | None, list[Answered]]] = []

    def commit(self, **kwargs: Any) -> None:
        offsets = [(tp.topic, tp.partition, tp.offset) for tp in kwargs["offsets"]]
        self.sent.append((offsets, kwargs["asynchronous"]))

    def answer(self, error: KafkaError | None) -> None:
        """The broker's answer to the last commit sent."""
        offsets, _ = self.sent[-1]
        self.answers.append((error, [Answered(t, p, o, error) for t, p, o in offsets]))

    def poll(self, timeout: float = -1) -> StandInMessage | None:
        while self.answers:
            self.on_commit(*self.answers.pop(0))
        return super().poll(timeout)


@pytest.fixture
def source() -> Iterator[KafkaJobSource]:
    # No broker: the real consumers are set up, then swapped for stand-ins.
    made = KafkaJobSource("127.0.0.1:1", ["t"])
    for consumer in made._consumers.values():
        consumer.close()
    yield made
    made.close()


def _consumer(source: KafkaJobSource, count: int) -> AnsweringConsumer:
    # Before the fix the source registered no callback: the answers went nowhere.
    on_commit = source.consumer_config("t").get("on_commit") or (lambda *answer: None)
    consumer = AnsweringConsumer(on_commit, [StandInMessage(n, f"j{n}") for n in range(count)])
    source._consumers["t"] = consumer  # type: ignore[assignment]
    return consumer


def test_an_asynchronous_commit_the_broker_refuses_is_sent_again(
    source: KafkaJobSource,
) -> None:
    """Pins (found by the full chaos run, Kafka mode): an asynchronous commit
    was counted as committed when it was sent. The broker refuses those sent
    while the group rebalances (ILLEGAL_GENERATION: 17 in one run); the
    position was never offered again, and a partition with no record after
    it kept its old committed offset for good (offsets behind at the end of
    a run whose instances all finished), or its next owner ran those
    records again. Now the refusal leaves the position to the next commit."""
    consumer = _consumer(source, 1)
    [job] = source.fetch(5)
    source.mark_done(job)
    assert source.commit() == 1
    assert consumer.sent == [([(TOPIC, 0, 1)], True)]
    consumer.answer(KafkaError(KafkaError.ILLEGAL_GENERATION))
    assert source.fetch(5) == []  # the answer comes inside the poll
    assert source.stats.commit_errors == 1
    assert source.commit() == 1
    assert consumer.sent[-1] == ([(TOPIC, 0, 1)], True)
    consumer.answer(None)
    assert source.fetch(5) == []
    assert source.stats.commits == 1
    assert source.commit() == 0


def test_an_unanswered_commit_is_not_sent_again_but_a_synchronous_one_includes_it(
    source: KafkaJobSource,
) -> None:
    """While an asynchronous commit is unanswered the same position is not
    sent again at every commit; a synchronous commit (close, revoke) does
    not count on that answer, which may be a refusal: it commits it."""
    consumer = _consumer(source, 2)
    jobs = source.fetch(5)
    source.mark_done(jobs[0])
    assert source.commit() == 1
    assert source.commit() == 0  # unanswered: not sent twice
    source.mark_done(jobs[1])
    assert source.commit() == 1  # a later position goes
    assert consumer.sent[-1] == ([(TOPIC, 0, 2)], True)
    source._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert consumer.sent[-1] == ([(TOPIC, 0, 2)], False)


def test_a_commit_answered_twice_is_counted_once(source: KafkaJobSource) -> None:
    """Pins: a synchronous commit was counted when it returned and again when
    librdkafka handed its answer to ``on_commit`` (it queues the answers of
    synchronous commits too): the commits counter of /metrics ran ahead.
    Only an answer that moves the committed position counts."""
    consumer = _consumer(source, 1)
    [job] = source.fetch(5)
    source.mark_done(job)
    assert source.commit(asynchronous=False) == 1
    assert source.stats.commits == 1
    consumer.answer(None)  # the same commit's answer, served by the next poll
    assert source.fetch(5) == []
    assert source.stats.commits == 1
    assert source.commit() == 0
