"""The local engine's Kafka dispatch (``LocalEngine(dispatch="kafka")``).

Like the real engine in ``kafka_outbox`` mode: every job that becomes
claimable (created, or put back by a retryable fail with retries left) is
published to ``workflow.jobs.<jobType>`` as a ``workflow.v1.JobDispatchEvent``,
keyed by its instance id, with the ``content-type`` and ``dedup-id`` headers;
each publish has a new ``dedup_id``. Polls answer 410 (``POLL_GONE_BODY``).

The store calls ``enqueue`` under its lock: the record is encoded there (a
snapshot of the job at that moment) and handed to a relay thread that
produces it, the local counterpart of the engine's outbox relay. Like the
engine, it does not create topics: a missing topic is logged and the record
is counted in ``failed``. A record the broker did not take for another
reason (down, restarting) is published again, as the outbox relay keeps a
dispatch until the broker has it.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from workflow_sdk.kafka.dispatch import encode_dispatch, topic_for
from workflow_sdk.testing.records import Job, UlidFactory

_log = logging.getLogger("workflow_sdk.testing")

#: The real engine's answer to ``POST /v1/jobs/poll`` in Kafka dispatch mode (410).
POLL_GONE_BODY: dict[str, str] = {
    "error": "poll path disabled",
    "dispatch_mode": "kafka_outbox",
    "hint": "consume directly from Kafka topic workflow.jobs.<jobType>",
}

#: Errors after which a dispatch is not published again: the topic does not
#: exist (the engine does not create topics; an operator must).
_GIVE_UP = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})

# (topic, key, value, headers) of one record.
_Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


class DispatchPublisher:
    """Publishes the local engine's job dispatches to Kafka from a relay thread."""

    def __init__(self, brokers: str, extra_config: Mapping[str, Any] | None = None) -> None:
        if not brokers:
            raise ValueError('LocalEngine(dispatch="kafka") needs brokers="host:port[,...]"')
        self.brokers = brokers
        self.extra_config = dict(extra_config or {})
        self._ids = UlidFactory()
        self._queue: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        # Guarded by ``_cond``.
        self.enqueued = 0
        self.published = 0
        self.failed = 0
        #: Dispatches the broker did not take, queued again.
        self.retried = 0
        # Relay thread only: records whose delivery failed in the last flush.
        self._undelivered: list[tuple[_Record, KafkaError]] = []
        self._thread: threading.Thread | None = None

    def enqueue(self, job: Job) -> None:
        """Encode a dispatch of ``job`` now (caller: the store, under its lock)."""
        dedup_id = self._ids.new()
        value, headers = encode_dispatch(
            dedup_id=dedup_id,
            job_id=job.id,
            instance_id=job.instance_id,
            step_execution_id=job.step_execution_id,
            job_type=job.job_type,
            retries_remaining=job.retries_remaining,
            variables=job.variables,
            created_at=job.created_at,
        )
        with self._cond:
            self.enqueued += 1
        self._queue.put((topic_for(job.job_type), job.instance_id.encode(), value, headers))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._relay, name="local-engine-kafka-relay", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued (within ``timeout``), then end the relay."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        self._thread = None

    def wait_published(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` dispatches were acknowledged by the broker."""
        with self._cond:
            return self._cond.wait_for(lambda: self.published + self.failed >= count, timeout)

    def _relay(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.brokers,
                "linger.ms": 1,
                "enable.idempotence": True,
                # A missing topic fails its records after this, not after 5 min.
                "message.timeout.ms": 15000,
                **self.extra_config,
            }
        )
        try:
            while True:
                record = self._queue.get()
                # Take what else is queued: one flush per batch, as a relay would.
                batch: list[_Record] = []
                while record is not None:
                    batch.append(record)
                    try:
                        record = self._queue.get_nowait()
                    except queue.Empty:
                        break
                for topic, key, value, headers in batch:
                    self._produce(producer, topic, key, value, headers)
                producer.flush(30)
                self._retry_undelivered(producer)
                if record is None:
                    return
        finally:
            producer.flush(10)

    def _produce(
        self,
        producer: Producer,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=cast("list[tuple[str, str | bytes | None]]", headers),
                    on_delivery=functools.partial(self._delivered, (topic, key, value, headers)),
                )
                return
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain

    def _retry_undelivered(self, producer: Producer) -> None:
        """As the engine's outbox relay: a dispatch the broker did not take
        (down, restarting, unreachable past ``message.timeout.ms``) is queued
        again, not lost (found by the chaos suite); one for a topic that does
        not exist is given up, logged and counted in ``failed``."""
        undelivered, self._undelivered = self._undelivered, []
        for record, error in undelivered:
            topic = record[0]
            try:
                found = producer.list_topics(topic, timeout=5.0).topics.get(topic)
                missing = found is None or found.error is not None
            except KafkaException:
                missing = False  # the broker is not answering: keep the dispatch
            if missing:
                self._count_failed(topic, error)
                continue
            with self._cond:
                self.retried += 1
            _log.warning(
                "local engine: publishing a job dispatch to %s failed (%s); publishing it again",
                topic,
                error.str(),
            )
            self._queue.put(record)

    def _delivered(self, record: _Record, error: KafkaError | None, message: Message) -> None:
        if error is not None and error.code() not in _GIVE_UP:
            # Sorted out after the flush (``_retry_undelivered``): the broker
            # may be down, or the topic missing (both time out alike).
            self._undelivered.append((record, error))
            return
        if error is not None:
            self._count_failed(message.topic() or record[0], error)
            return
        with self._cond:
            self.published += 1
            self._cond.notify_all()

    def _count_failed(self, topic: str, error: KafkaError) -> None:
        with self._cond:
            self.failed += 1
            self._cond.notify_all()
        _log.error(
            "local engine: could not publish a job dispatch to %s: %s "
            "(the engine does not create topics: create it)",
            topic,
            error.str(),
        )


__all__ = ["POLL_GONE_BODY", "DispatchPublisher"]
