"""The engine's Kafka dispatch record: names, decoding and encoding.

In ``kafka_outbox`` mode the engine publishes one record per job to the
topic ``workflow.jobs.<jobType>``, keyed by the instance id, with the headers
``content-type`` and ``dedup-id`` and a protobuf ``workflow.v1.JobDispatchEvent``
as the value (see "Kafka dispatch mode" in the contract).
``decode_dispatch`` turns such a record into a job dict of the same shape as
a polled job, so that everything downstream (handler context, reporting,
staleness) is shared with poll mode; ``encode_dispatch`` is its inverse, for
the local engine and tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from google.protobuf.message import DecodeError

from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.kafka.job_dispatch_pb2 import JobDispatchEvent

TOPIC_PREFIX = "workflow.jobs."
GROUP_PREFIX = "workflow.workers."
#: The ``content-type`` header of every dispatch record.
CONTENT_TYPE = "application/x-protobuf; proto=workflow.v1.JobDispatchEvent"
MESSAGE_NAME = "workflow.v1.JobDispatchEvent"
SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1)

#: Record headers as confluent-kafka gives them (a list of pairs, values
#: bytes or None), or a plain mapping.
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


class MalformedDispatch(WorkflowSDKError, ValueError):  # noqa: N818 (the documented name)
    """A record that is not a usable ``JobDispatchEvent``; ``str()`` says why."""


def topic_for(job_type: str) -> str:
    """``workflow.jobs.<jobType>``: the topic the engine publishes a job type's jobs to."""
    return TOPIC_PREFIX + job_type


def group_for(job_type: str) -> str:
    """``workflow.workers.<jobType>``: the consumer group of the other SDKs' convention."""
    return GROUP_PREFIX + job_type


def _header_map(headers: Headers | None) -> dict[str, str]:
    """Lower-cased header names -> text values (the last one wins)."""
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        found[str(name).lower()] = text
    return found


def check_content_type(value: str) -> None:
    """Raise ``MalformedDispatch`` unless ``value`` names a protobuf JobDispatchEvent."""
    media, _, params = value.partition(";")
    if media.strip().lower() != "application/x-protobuf":
        raise MalformedDispatch(
            f"content-type {value!r} is not a protobuf dispatch (expected {CONTENT_TYPE!r})"
        )
    for param in params.split(";"):
        key, _, named = param.partition("=")
        if key.strip().lower() == "proto" and named.strip().strip('"') != MESSAGE_NAME:
            raise MalformedDispatch(
                f"content-type {value!r} names message {named.strip()!r}, not {MESSAGE_NAME}"
            )


def decode_dispatch(value: bytes | None, headers: Headers | None = None) -> dict[str, Any]:
    """A dispatch record -> a job dict shaped like a polled job, plus ``dedupId``.

    Keys: ``id``, ``instanceId``, ``stepExecutionId``, ``jobType``,
    ``retriesRemaining``, ``variables`` (a dict), ``createdAt`` (RFC 3339 in
    UTC, or None when absent), ``dedupId`` (the event's, else the header's,
    else None). Fields this decoder does not know are ignored. A missing
    ``content-type`` header is accepted; a wrong one is not.

    :raises MalformedDispatch: not protobuf, not a JobDispatchEvent, no job id
        or job type, or a payload that is not a JSON object.
    """
    found = _header_map(headers)
    content_type = found.get("content-type")
    if content_type is not None:
        check_content_type(content_type)
    if value is None:
        raise MalformedDispatch("the record has no value (a tombstone), not a dispatch")
    try:
        event = JobDispatchEvent.FromString(bytes(value))
    except DecodeError as exc:
        raise MalformedDispatch(
            f"the record's value is not a JobDispatchEvent ({len(value)} bytes): {exc}"
        ) from exc
    if not event.job_id:
        raise MalformedDispatch("the dispatch has no job_id")
    if not event.job_type:
        raise MalformedDispatch(f"dispatch of job {event.job_id} has no job_type")
    return {
        "id": event.job_id,
        "instanceId": event.instance_id,
        "stepExecutionId": event.step_execution_id,
        "jobType": event.job_type,
        "retriesRemaining": event.retries_remaining,
        "variables": _variables(event),
        "createdAt": event.created_at.ToJsonString() if event.HasField("created_at") else None,
        "dedupId": event.dedup_id or found.get("dedup-id") or None,
    }


def _variables(event: JobDispatchEvent) -> dict[str, Any]:
    payload = event.job_payload
    if not payload:
        # proto3 cannot tell an empty bytes field from an absent one: no variables.
        return {}
    try:
        variables = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedDispatch(
            f"dispatch of job {event.job_id}: job_payload is not JSON: {exc}"
        ) from exc
    except RecursionError as exc:
        # Nested deeper than the decoder goes: the documented error, not a
        # RecursionError (found by the property tests).
        raise MalformedDispatch(
            f"dispatch of job {event.job_id}: job_payload is nested too deep to decode"
        ) from exc
    if not isinstance(variables, dict):
        raise MalformedDispatch(
            f"dispatch of job {event.job_id}: job_payload is a JSON "
            f"{type(variables).__name__}, not an object"
        )
    return variables


def encode_dispatch(
    *,
    dedup_id: str,
    job_id: str,
    instance_id: str,
    step_execution_id: str,
    job_type: str,
    retries_remaining: int,
    variables: Mapping[str, Any],
    created_at: datetime | None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A record value and headers exactly as the engine's relay writes them."""
    event = JobDispatchEvent(
        schema_version=SCHEMA_VERSION,
        dedup_id=dedup_id,
        job_id=job_id,
        instance_id=instance_id,
        step_execution_id=step_execution_id,
        job_type=job_type,
        retries_remaining=retries_remaining,
        job_payload=json.dumps(dict(variables), ensure_ascii=False).encode("utf-8"),
    )
    if created_at is not None:
        # By hand: Timestamp.FromDatetime of older protobuf runtimes refuses
        # zone-aware datetimes.
        utc = created_at.astimezone(timezone.utc) if created_at.tzinfo else created_at
        delta = utc.replace(tzinfo=None) - _EPOCH
        event.created_at.seconds = delta.days * 86_400 + delta.seconds
        event.created_at.nanos = delta.microseconds * 1000
    headers = [("content-type", CONTENT_TYPE.encode()), ("dedup-id", dedup_id.encode())]
    return event.SerializeToString(), headers


__all__ = [
    "CONTENT_TYPE",
    "GROUP_PREFIX",
    "TOPIC_PREFIX",
    "Headers",
    "MalformedDispatch",
    "check_content_type",
    "decode_dispatch",
    "encode_dispatch",
    "group_for",
    "topic_for",
]
