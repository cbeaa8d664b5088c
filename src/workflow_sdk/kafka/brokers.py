"""The Kafka brokers themselves: their address list, the topic check, and their error.

Used before and apart from consuming: the supervisor checks at start-up
that every job type's topic exists (the engine does not create topics), and
``KafkaJobSource`` takes the same address list.

librdkafka writes its own log lines to stderr unless given a logger; every
client here and in ``KafkaJobSource`` gets ``LIBRDKAFKA_LOG``, so that its
lines follow the supervisor's log format (JSON included). librdkafka hands
them over when the client is polled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.kafka.dispatch import topic_for

#: The logger of librdkafka's own lines (``logger`` in every client's config).
LIBRDKAFKA_LOG = logging.getLogger("workflow_sdk.kafka.librdkafka")


class KafkaSourceError(WorkflowSDKError):
    """The brokers did not answer, or a consumer could not be set up."""


def brokers_text(brokers: str | Sequence[str]) -> str:
    """``"host:port,host:port"`` from either form; ValueError when empty."""
    text = brokers if isinstance(brokers, str) else ",".join(brokers)
    if not text.strip():
        raise ValueError("no Kafka brokers given (expected 'host:port[,host:port...]')")
    return text


def check_topics(
    brokers: str | Sequence[str],
    job_types: Sequence[str],
    extra_config: Mapping[str, Any] | None = None,
    *,
    timeout: float = 10.0,
) -> list[str]:
    """The topics ``workflow.jobs.<jobType>`` of ``job_types`` that do not exist, by name.

    :raises KafkaSourceError: the brokers did not answer within ``timeout``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": brokers_text(brokers),
        "logger": LIBRDKAFKA_LOG,
        **dict(extra_config or {}),
    }
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaSourceError(
            f"Kafka brokers {config['bootstrap.servers']} did not answer within "
            f"{timeout:.0f} s: {exc}"
        ) from exc
    finally:
        admin.poll(0)  # hands librdkafka's queued log lines to the logger
    missing = []
    for job_type in sorted(set(job_types)):
        topic = topic_for(job_type)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            missing.append(topic)
    return missing


__all__ = ["LIBRDKAFKA_LOG", "KafkaSourceError", "brokers_text", "check_topics"]
