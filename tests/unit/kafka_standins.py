"""Stand-in Kafka consumers and records for the unit tests of KafkaJobSource
(the paths a broker cannot be made to take on demand). Needs confluent_kafka:
import it after the test module's ``importorskip``."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

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
