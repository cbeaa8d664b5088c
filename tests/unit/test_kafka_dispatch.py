"""decode_dispatch against records captured from the real engine, and its errors."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from workflow_sdk.kafka.dispatch import (
    CONTENT_TYPE,
    MalformedDispatch,
    decode_dispatch,
    encode_dispatch,
    group_for,
    topic_for,
)
from workflow_sdk.kafka.job_dispatch_pb2 import JobDispatchEvent

RECORDINGS = json.loads(
    (Path(__file__).resolve().parents[1] / "kafka/data/kafka-dispatch.json").read_text("utf-8")
)
RECORDS: list[dict[str, Any]] = RECORDINGS["records"]


def _headers(record: dict[str, Any]) -> list[tuple[str, bytes]]:
    # As confluent-kafka hands them over: a list of (name, bytes) pairs.
    return [(name, value.encode()) for name, value in record["headers"].items()]


@pytest.mark.parametrize("record", RECORDS, ids=[r["note"] for r in RECORDS])
def test_a_recorded_record_decodes_to_a_polled_job_shape(record: dict[str, Any]) -> None:
    want = record["decoded"]
    job = decode_dispatch(base64.b64decode(record["value_base64"]), _headers(record))
    assert job == {
        "id": want["job_id"],
        "instanceId": want["instance_id"],
        "stepExecutionId": want["step_execution_id"],
        "jobType": want["job_type"],
        "retriesRemaining": want["retries_remaining"],
        "variables": json.loads(want["job_payload"]),
        "createdAt": want["created_at"],
        "dedupId": want["dedup_id"],
    }
    assert record["key"] == job["instanceId"]
    assert record["topic"] == topic_for(job["jobType"])
    assert record["headers"]["dedup-id"] == job["dedupId"]


def test_headers_may_be_a_mapping_or_absent() -> None:
    record = RECORDS[0]
    value = base64.b64decode(record["value_base64"])
    assert decode_dispatch(value, record["headers"]) == decode_dispatch(value, None)


def _tag(field: int, wire_type: int) -> bytes:
    """A protobuf field key as a varint."""
    key, out = field << 3 | wire_type, bytearray()
    while key > 0x7F:
        out.append(key & 0x7F | 0x80)
        key >>= 7
    out.append(key)
    return bytes(out)


def test_unknown_fields_are_ignored() -> None:
    value = base64.b64decode(RECORDS[1]["value_base64"])
    # Field 99 (a string) and field 98 (a varint) appended: a newer engine's fields.
    extra = _tag(99, 2) + b"\x03abc" + _tag(98, 0) + b"\x07"
    job = decode_dispatch(value + extra, _headers(RECORDS[1]))
    assert job["id"] == RECORDS[1]["decoded"]["job_id"]
    assert job["variables"] == {}


def test_dedup_id_falls_back_to_the_header() -> None:
    event = JobDispatchEvent(job_id="j1", job_type="t", job_payload=b"{}")
    job = decode_dispatch(event.SerializeToString(), [("dedup-id", b"d-1")])
    assert job["dedupId"] == "d-1"
    assert job["createdAt"] is None
    assert job["retriesRemaining"] == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\xff\xff\xff\xff", "not a JobDispatchEvent"),
        (None, "tombstone"),
        (b"", "no job_id"),
        (JobDispatchEvent(job_id="j1").SerializeToString(), "no job_type"),
        (
            JobDispatchEvent(job_id="j1", job_type="t", job_payload=b"{nope").SerializeToString(),
            "not JSON",
        ),
        (
            JobDispatchEvent(job_id="j1", job_type="t", job_payload=b"[1]").SerializeToString(),
            "JSON list, not an object",
        ),
        (
            JobDispatchEvent(job_id="j1", job_type="t", job_payload=b"\xff").SerializeToString(),
            "not JSON",
        ),
    ],
)
def test_garbage_raises_malformed_dispatch_saying_why(value: bytes | None, why: str) -> None:
    with pytest.raises(MalformedDispatch, match=why):
        decode_dispatch(value, [("content-type", CONTENT_TYPE.encode())])


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/x-protobuf; proto=workflow.v1.SomethingElse",
    ],
)
def test_a_wrong_content_type_is_refused(content_type: str) -> None:
    value = base64.b64decode(RECORDS[0]["value_base64"])
    with pytest.raises(MalformedDispatch, match="content-type"):
        decode_dispatch(value, [("content-type", content_type.encode())])


def test_encode_is_the_inverse_of_decode() -> None:
    created = datetime(2026, 11, 27, 11, 9, 47, 521297, tzinfo=timezone.utc)
    value, headers = encode_dispatch(
        dedup_id="d-9",
        job_id="j-9",
        instance_id="i-9",
        step_execution_id="s-9",
        job_type="render-tile",
        retries_remaining=2,
        variables={"note": "héllo", "n": [1, 2]},
        created_at=created,
    )
    assert headers == [("content-type", CONTENT_TYPE.encode()), ("dedup-id", b"d-9")]
    assert decode_dispatch(value, headers) == {
        "id": "j-9",
        "instanceId": "i-9",
        "stepExecutionId": "s-9",
        "jobType": "render-tile",
        "retriesRemaining": 2,
        "variables": {"note": "héllo", "n": [1, 2]},
        "createdAt": "2026-11-27T11:09:47.521297Z",
        "dedupId": "d-9",
    }
    assert JobDispatchEvent.FromString(value).schema_version == 1


def test_topic_and_group_follow_the_convention() -> None:
    assert topic_for("render-tile") == "workflow.jobs.render-tile"
    assert group_for("render-tile") == "workflow.workers.render-tile"
