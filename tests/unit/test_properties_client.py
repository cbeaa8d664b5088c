"""Property-based tests of the client's reading of engine answers (hypothesis).

Whatever the engine (or a proxy in front of it) answers, with any status,
any body, truncated, of the wrong types, with huge values, the client ends
in one of its documented outcomes: a decoded value, an ``EngineClientError``
(``EngineResponseError`` for a 2xx it cannot read), or, for one job of a
poll answer, the job left out with one log line. Never another exception,
and never a good job lost beside a bad one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unit.strategies import JSON, damaged_jobs, good_jobs
from workflow_sdk.client import models, wire
from workflow_sdk.errors import EngineClientError, EngineResponseError
from workflow_sdk.sanitize import has_controls
from workflow_sdk.supervisor.exposition.logs import TextLineFormatter

STATUSES = st.integers(min_value=0, max_value=999)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(status=STATUSES, phrase=st.text(max_size=40), body=st.binary(max_size=2000))
def test_any_answer_is_a_value_or_an_engine_client_error(
    status: int, phrase: str, body: bytes
) -> None:
    for expect_json in (True, False):
        try:
            wire.read_answer(
                status,
                phrase,
                body,
                method="POST",
                url="http://e/v1/jobs/poll",
                expect_json=expect_json,
            )
        except EngineClientError as exc:
            assert exc.status_code == status
            assert isinstance(exc.message, str) and exc.message
            if status < 400 and not isinstance(exc, EngineResponseError):
                # Not the contract's success status (a 3xx, an unnamed 2xx):
                # not delivered, and worth another try.
                assert exc.retryable


@settings(max_examples=300)
@given(
    status=STATUSES,
    phrase=st.text(max_size=40),
    body=st.binary(max_size=2000) | JSON.map(lambda v: json.dumps(v).encode()),
)
def test_the_text_of_an_error_answer_is_never_empty(status: int, phrase: str, body: bytes) -> None:
    message, code = wire.error_text(status, phrase, body)
    assert isinstance(message, str) and message
    assert code is None or isinstance(code, str)


@settings(max_examples=300)
@given(body=JSON)
def test_any_poll_answer_is_jobs_or_an_engine_response_error(body: Any) -> None:
    try:
        jobs = models.parse_poll(body)
    except EngineResponseError:
        return
    for job in jobs:
        assert isinstance(job["id"], str) and isinstance(job["jobType"], str)
        assert isinstance(job["variables"], dict)
        assert isinstance(job["retriesRemaining"], int)


@settings(max_examples=200)
@given(
    good=st.lists(good_jobs(), max_size=6),
    bad=st.lists(damaged_jobs(), max_size=6),
    seed=st.randoms(),
)
def test_a_good_job_beside_bad_ones_is_never_lost(
    good: list[dict[str, Any]], bad: list[Any], seed: Any
) -> None:
    mixed = [*good, *bad]
    seed.shuffle(mixed)
    logging.getLogger("workflow_sdk.client").disabled = True
    try:
        jobs = models.parse_poll({"jobs": mixed})
    finally:
        logging.getLogger("workflow_sdk.client").disabled = False
    kept = [job["id"] for job in jobs]
    for job in good:
        assert job["id"] in kept
    # One line per job left out, nothing else.
    assert len(jobs) + len(jobs.malformed) == len(mixed)


@settings(max_examples=200)
@given(jobs=st.lists(good_jobs(), max_size=5), cut=st.integers(min_value=0, max_value=10_000))
def test_a_truncated_poll_answer_is_an_engine_response_error(
    jobs: list[dict[str, Any]], cut: int
) -> None:
    whole = json.dumps({"jobs": jobs}).encode()
    body = whole[: cut % (len(whole) + 1)]
    try:
        decoded = wire.read_answer(200, "OK", body, method="POST", url="u", expect_json=True)
        parsed = models.parse_poll(decoded)
    except EngineResponseError:
        assert body != whole
        return
    assert [job["id"] for job in parsed] == [job["id"] for job in jobs] or body != whole


@settings(max_examples=300)
@given(raw=damaged_jobs() | good_jobs())
def test_one_job_is_parsed_or_refused_with_an_engine_response_error(raw: Any) -> None:
    try:
        job = models.parse_job(raw)
    except EngineResponseError as exc:
        assert exc.message
        return
    assert job["stepId"] == "" or isinstance(job["stepId"], str)


@settings(max_examples=300)
@given(body=JSON | st.fixed_dictionaries({"items": st.none() | st.lists(JSON, max_size=5)}))
def test_any_history_answer_is_items_or_an_engine_response_error(body: Any) -> None:
    try:
        items = models.parse_history(body)
    except EngineResponseError:
        return
    for item in items:
        assert {"id", "stepId", "status"} <= set(item)


@settings(max_examples=200)
@given(body=JSON)
def test_any_page_answer_is_a_page_or_an_engine_response_error(body: Any) -> None:
    try:
        page = models.parse_page(body, "instance list")
    except EngineResponseError:
        return
    assert isinstance(page["items"], list) and isinstance(page["total"], int)


@pytest.mark.parametrize("status", [401, 403, 500, 502])
@settings(max_examples=100)
@given(reason=st.text(max_size=200) | st.just("bad token\nFAKE 2026 CRITICAL injected line"))
def test_an_engine_reason_never_brings_a_control_character_into_a_text_log_line(
    status: int, reason: str
) -> None:
    """A proxy answering 401 with ``{"reason": "bad token\\nFAKE ... CRITICAL"}``
    forged a log line of its own in the text format: the text log shows
    the reason escaped, on one line."""

    body = json.dumps({"error": "unauthorized", "reason": reason}).encode()
    error = wire.error_for(status, "", body, method="POST", url="http://e/v1/jobs/poll")
    record = logging.LogRecord(
        "workflow_sdk.supervisor", logging.WARNING, __file__, 1, "poll failed: %s", (error,), None
    )
    line = TextLineFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert not has_controls(line)
