"""Property-based tests of both job sources' intake (hypothesis).

Kafka: any record value and headers decode to a job or to the documented
``MalformedDispatch`` (the source then skips, commits and counts the
record), never another exception; a record the engine wrote decodes to what
was written. Poll: any poll answer, good jobs mixed with broken ones, goes
through the client's parsing and the supervisor's intake without an
exception, and every good job is claimed (none lost).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unit.fakes import idle_slot, intake_with
from unit.strategies import JSON, damaged_jobs, good_jobs
from workflow_sdk.client import models
from workflow_sdk.errors import EngineResponseError
from workflow_sdk.kafka.dispatch import (
    CONTENT_TYPE,
    MalformedDispatch,
    decode_dispatch,
    encode_dispatch,
)
from workflow_sdk.kafka.job_dispatch_pb2 import JobDispatchEvent
from workflow_sdk.supervisor.io.source import PollResult
from workflow_sdk.supervisor.loop.intake import PollVerdict

HEADER_VALUES = (
    st.none()
    | st.binary(max_size=60)
    | st.sampled_from(
        [CONTENT_TYPE.encode(), b"application/json", b"application/x-protobuf; proto=other.Msg"]
    )
)
HEADERS = st.none() | st.lists(
    st.tuples(
        st.sampled_from(["content-type", "Content-Type", "dedup-id", "x"]) | st.text(max_size=10),
        HEADER_VALUES,
    ),
    max_size=4,
)


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """A JobDispatchEvent with any field values, the payload any bytes."""
    event = JobDispatchEvent(
        schema_version=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        dedup_id=draw(st.text(max_size=20)),
        job_id=draw(st.text(max_size=20)),
        instance_id=draw(st.text(max_size=20)),
        step_execution_id=draw(st.text(max_size=20)),
        job_type=draw(st.text(max_size=20)),
        retries_remaining=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        job_payload=draw(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode())),
    )
    return event.SerializeToString()


@settings(max_examples=400)
@given(value=st.none() | st.binary(max_size=400) | events(), headers=HEADERS)
def test_any_record_is_a_job_or_a_malformed_dispatch(value: bytes | None, headers: Any) -> None:
    try:
        job = decode_dispatch(value, headers)
    except MalformedDispatch as exc:
        assert str(exc)
        return
    assert isinstance(job["id"], str) and job["id"]
    assert isinstance(job["jobType"], str) and job["jobType"]
    assert isinstance(job["variables"], dict)
    assert isinstance(job["retriesRemaining"], int)


def test_a_payload_nested_too_deep_is_a_malformed_dispatch() -> None:
    value, headers = encode_dispatch(
        dedup_id="d",
        job_id="j",
        instance_id="i",
        step_execution_id="s",
        job_type="t",
        retries_remaining=0,
        variables={},
        created_at=None,
    )
    event = JobDispatchEvent.FromString(value)
    event.job_payload = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    # A RecursionError escaped before (the source caught it as "any error").
    with pytest.raises(MalformedDispatch, match="nested too deep"):
        decode_dispatch(event.SerializeToString(), headers)


@settings(max_examples=200)
@given(
    job_id=st.text(min_size=1, max_size=30),
    job_type=st.text(min_size=1, max_size=30),
    instance_id=st.text(max_size=30),
    retries=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    variables=st.dictionaries(st.text(max_size=10), JSON, max_size=5),
    created=st.none()
    | st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(timezone.utc),
    ),
)
def test_a_record_the_engine_wrote_decodes_to_what_was_written(
    *,
    job_id: str,
    job_type: str,
    instance_id: str,
    retries: int,
    variables: dict[str, Any],
    created: datetime | None,
) -> None:
    value, headers = encode_dispatch(
        dedup_id="d-1",
        job_id=job_id,
        instance_id=instance_id,
        step_execution_id="s",
        job_type=job_type,
        retries_remaining=retries,
        variables=variables,
        created_at=created,
    )
    job = decode_dispatch(value, headers)
    assert (job["id"], job["jobType"], job["instanceId"]) == (job_id, job_type, instance_id)
    assert job["retriesRemaining"] == retries
    assert job["variables"] == json.loads(json.dumps(variables))
    assert job["dedupId"] == "d-1"
    assert (job["createdAt"] is None) == (created is None)


@settings(max_examples=200)
@given(
    good=st.lists(good_jobs(), max_size=5, unique_by=lambda job: job["id"]),
    bad=st.lists(damaged_jobs(), max_size=5),
    seed=st.randoms(),
)
def test_the_supervisor_claims_every_good_job_of_any_poll_answer(
    good: list[dict[str, Any]], bad: list[Any], seed: Any
) -> None:
    ids = {g["id"] for g in good}
    # A broken job that shares a good one's id is another delivery of it.
    bad = [
        b
        for b in bad
        if not (isinstance(b, dict) and isinstance(b.get("id"), str) and b["id"] in ids)
    ]
    mixed = [*good, *bad]
    seed.shuffle(mixed)
    quiet = logging.getLogger("workflow_sdk")
    quiet.disabled = True
    try:
        try:
            jobs = models.parse_poll({"jobs": mixed})
        except EngineResponseError:
            raise AssertionError("a list of jobs is a valid envelope") from None
        intake, _ = intake_with(idle_slot(1), limit=100)
        verdict = intake.on_result(PollResult(len(mixed), 0.0, 0.01, jobs), 0.0)
    finally:
        quiet.disabled = False
    assert verdict is PollVerdict.CLAIMED
    for job in good:
        assert job["id"] in intake.ledger, job


@settings(max_examples=200)
@given(body=JSON)
def test_any_poll_answer_is_claimed_or_refused_without_an_exception(body: Any) -> None:
    quiet = logging.getLogger("workflow_sdk")
    quiet.disabled = True
    try:
        try:
            jobs = models.parse_poll(body)
        except EngineResponseError as exc:
            # The poller hands the intake the error: a failed poll, backed off.
            result = PollResult(1, 0.0, 0.01, error=exc)
        else:
            result = PollResult(len(jobs), 0.0, 0.01, jobs)
        intake, _ = intake_with(idle_slot(1), limit=100)
        verdict = intake.on_result(result, 0.0)
    finally:
        quiet.disabled = False
    assert verdict in (PollVerdict.CLAIMED, PollVerdict.FAILED)
