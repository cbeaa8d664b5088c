"""Helpers of the Kafka tier: topics, publishing, fetching with a deadline."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from process.conftest import SupervisorProcess
from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.kafka.dispatch import encode_dispatch, topic_for


def create_topics(bootstrap: str, job_types: Sequence[str], partitions: int = 1) -> None:
    """Create ``workflow.jobs.<jobType>`` for each job type, as an operator would."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(topic_for(t), num_partitions=partitions, replication_factor=1) for t in job_types
    ]
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result(30)


def publish(
    bootstrap: str,
    job_type: str,
    records: Sequence[tuple[bytes | None, list[tuple[str, bytes]]]],
    key: bytes = b"instance",
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value, headers in records:
        producer.produce(topic_for(job_type), key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def dispatch(
    job_type: str, job_id: str, dedup_id: str, **variables: Any
) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode_dispatch(
        dedup_id=dedup_id,
        job_id=job_id,
        instance_id=f"inst-{job_id}",
        step_execution_id=f"se-{job_id}",
        job_type=job_type,
        retries_remaining=0,
        variables=variables,
        created_at=None,
    )


def fetch_until(
    source: KafkaJobSource, count: int, timeout: float = 30.0, *, batch: int | None = None
) -> list[dict[str, Any]]:
    """Fetch until ``count`` jobs came (or the deadline passed); never asks for more."""
    jobs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(jobs) < count and time.monotonic() < deadline:
        want = count - len(jobs) if batch is None else min(batch, count - len(jobs))
        got = source.fetch(want, timeout=0.5)
        assert len(got) <= want
        jobs.extend(got)
    return jobs


def drain_nothing(source: KafkaJobSource, seconds: float) -> list[dict[str, Any]]:
    """Everything a source hands out within ``seconds`` (expected: nothing)."""
    jobs: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs.extend(source.fetch(10, timeout=0.2))
    return jobs


def service_flow(workflow_id: str, job_type: str, retries: int = 0) -> dict[str, Any]:
    """A definition: one SERVICE_TASK of ``job_type``, then END."""
    return {
        "id": workflow_id,
        "name": workflow_id,
        "steps": [
            {
                "id": "work",
                "name": "work",
                "type": "SERVICE_TASK",
                "jobType": job_type,
                "retryCount": retries,
                "nextStep": "end",
            },
            {"id": "end", "name": "end", "type": "END"},
        ],
    }


def read_records(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """The first ``count`` records of ``topic``, read by a throwaway consumer group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    records: list[Any] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                records.append(message)
    finally:
        consumer.close()
    return records


def start_kafka_supervisor(
    tmp_path: Path, engine_url: str, bootstrap: str, name: str, handlers_source: str
) -> SupervisorProcess:
    """A Kafka-mode supervisor (2 workers, metrics on a free port) running the
    handler module ``handlers_source``, written as ``<name>.py`` in
    ``tmp_path``; its groups are ``<name>.<jobType>``. The caller reaps it."""
    (tmp_path / f"{name}.py").write_text(handlers_source)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        f'[engine]\nurl = "{engine_url}"\ntimeout = 5\ndispatch = "kafka"\n'
        f'[supervisor]\nhandlers = ["{name}:registry"]\n'
        "workers = 2\npoll_interval = 0.1\ngraceful_timeout = 20\n"
        f'[kafka]\nbrokers = ["{bootstrap}"]\ngroup = "{name}.{{job_type}}"\n'
        "[metrics]\nport = 0\n"
    )
    env = dict(os.environ)
    env.pop("ROCHALLOR_ENGINE_URL", None)
    return SupervisorProcess(config, tmp_path, env)
