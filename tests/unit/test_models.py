"""Time stamps and the shape checks of ``workflow_sdk.client.models``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from workflow_sdk.client import models
from workflow_sdk.errors import EngineResponseError

UTC = timezone.utc

# -- parse_timestamp ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2024-03-01T12:00:00Z", 0),
        ("2024-03-01T12:00:00.5Z", 500_000),
        ("2024-03-01T12:00:00.12Z", 120_000),
        ("2024-03-01T12:00:00.123Z", 123_000),
        ("2024-03-01T12:00:00.1234Z", 123_400),
        ("2024-03-01T12:00:00.12345Z", 123_450),
        ("2024-03-01T12:00:00.123456Z", 123_456),
        ("2024-03-01T12:00:00.000001Z", 1),
    ],
)
def test_zero_to_six_fraction_digits(text: str, micros: int) -> None:
    parsed = models.parse_timestamp(text)
    assert parsed == datetime(2024, 3, 1, 12, 0, 0, micros, tzinfo=UTC)
    assert parsed.microsecond == micros


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("2024-03-01T12:00:00Z", timedelta(0)),
        ("2024-03-01T12:00:00+02:00", timedelta(hours=2)),
        ("2024-03-01T12:00:00-0530", -timedelta(hours=5, minutes=30)),
        ("2024-03-01T12:00:00+0545", timedelta(hours=5, minutes=45)),
        ("2024-03-01T12:00:00.75-03:00", -timedelta(hours=3)),
        ("2024-03-01T12:00:00+00:00", timedelta(0)),
    ],
)
def test_zones(text: str, offset: timedelta) -> None:
    parsed = models.parse_timestamp(text)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == offset
    assert (parsed.hour, parsed.minute, parsed.second) == (12, 0, 0)


def test_space_separator() -> None:
    assert models.parse_timestamp("2024-03-01 12:00:00.25+01:00") == datetime(
        2024, 3, 1, 11, 0, 0, 250_000, tzinfo=UTC
    )


def test_surrounding_whitespace_is_ignored() -> None:
    assert models.parse_timestamp(" 2024-03-01T12:00:00Z\n") == datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        "2024-03-01T12:00:00",
        "2024-03-01T12:00:00.123456",
        "2024-03-01 12:00:00",
        "2024-03-01",
        "12:00:00Z",
        "",
        "yesterday",
        "2024-03-01T12:00Z",
        "2024-03-01T12:00:00+2",
        "2024-03-01T12:00:00 +02:00",
        "2024-13-01T12:00:00Z",
        "2024-02-30T12:00:00Z",
        "2024-03-01T25:00:00Z",
    ],
)
def test_rejects_strings_without_zone_or_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        models.parse_timestamp(bad)


@pytest.mark.parametrize("bad", [None, 1709290800, 1.5, b"2024-03-01T12:00:00Z"])
def test_rejects_non_strings_with_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        models.parse_timestamp(bad)


def test_same_instant_in_different_zones_is_equal() -> None:
    a = models.parse_timestamp("2024-03-01T12:00:00+02:00")
    b = models.parse_timestamp("2024-03-01T10:00:00Z")
    c = models.parse_timestamp("2024-03-01T04:30:00-0530")
    assert a == b == c
    assert a - c == timedelta(0)


def test_order_across_zones_is_by_instant_not_by_text() -> None:
    early_text = "2024-03-01T11:00:00+02:00"  # 09:00 UTC
    late_text = "2024-03-01T10:00:00Z"  # 10:00 UTC
    assert early_text > late_text  # comparing strings would get it wrong
    early = models.parse_timestamp(early_text)
    late = models.parse_timestamp(late_text)
    assert early < late
    assert (late - early).total_seconds() == 3600


def test_fractions_order_correctly() -> None:
    # "…00.5" > "…00.123456" as text too, but "…00.5" vs "…00Z" is where dropping
    # trailing zeros bites string comparison.
    assert models.parse_timestamp("2024-03-01T12:00:00Z") < models.parse_timestamp(
        "2024-03-01T12:00:00.000001Z"
    )
    assert models.parse_timestamp("2024-03-01T12:00:00.5Z") > models.parse_timestamp(
        "2024-03-01T12:00:00.499999Z"
    )


# -- parse_job ---------------------------------------------------------------

MINIMAL_JOB = {"id": "j", "instanceId": "i", "jobType": "t"}


def test_parse_job_fills_defaults_and_does_not_mutate_input() -> None:
    raw = dict(MINIMAL_JOB, variables=None)
    job = models.parse_job(raw)
    assert job["stepId"] == ""
    assert job["stepExecutionId"] == ""
    assert job["variables"] == {}
    assert job["retriesRemaining"] == 0
    assert raw == dict(MINIMAL_JOB, variables=None)


def test_parse_job_keeps_known_and_unknown_fields() -> None:
    raw = dict(
        MINIMAL_JOB,
        stepId="s1",
        stepExecutionId="se",
        retriesRemaining=2,
        variables={"a": 1},
        lockExpiresAt="2024-03-01T12:00:30.5+01:00",
        somethingNew="kept",
    )
    assert models.parse_job(raw) == raw


def test_parse_job_works_out_the_lease_length_once() -> None:
    raw = dict(
        MINIMAL_JOB,
        lockedAt="2024-03-01T12:00:00.25+01:00",
        lockExpiresAt="2024-03-01T11:00:30.5Z",
    )
    job = models.parse_job(raw)
    assert isinstance(job, models.ParsedJob)
    assert isinstance(job, dict)
    assert job.lease_length == pytest.approx(30.25)
    # No visible key is added: the handler context and the README shape hold.
    assert set(job) == set(raw) | {"stepId", "stepExecutionId", "variables", "retriesRemaining"}
    assert models.lease_length_of(job) == job.lease_length
    assert models.lease_length_of(dict(job)) == pytest.approx(30.25)


@pytest.mark.parametrize(
    "stamps",
    [
        {},
        {"lockExpiresAt": "2024-03-01T12:00:30Z"},
        {"lockedAt": "2024-03-01T12:00:00Z"},
        {"lockedAt": "garbage", "lockExpiresAt": "2024-03-01T12:00:30Z"},
        {"lockedAt": 5, "lockExpiresAt": "2024-03-01T12:00:30Z"},
    ],
)
def test_parse_job_without_usable_stamps_has_no_lease_length(stamps: dict[str, Any]) -> None:
    job = models.parse_job(dict(MINIMAL_JOB, **stamps))
    assert isinstance(job, models.ParsedJob)
    assert job.lease_length is None
    assert models.lease_length_of(dict(job)) is None


# -- pages and history -------------------------------------------------------


def test_parse_page_null_items_and_missing_total() -> None:
    assert models.parse_page({"items": None, "total": 0}, "x") == {"items": [], "total": 0}
    assert models.parse_page({"items": [{"id": "a"}]}, "x") == {"items": [{"id": "a"}], "total": 1}
    assert models.parse_page({}, "x") == {"items": [], "total": 0}


def test_expect_list() -> None:
    assert models.expect_list({"k": None}, "k", "x") == []
    assert models.expect_list({}, "k", "x") == []
    assert models.expect_list({"k": [1]}, "k", "x") == [1]
    with pytest.raises(EngineResponseError):
        models.expect_list({"k": {}}, "k", "x")


def test_expect_object_error_message_is_bounded() -> None:
    with pytest.raises(EngineResponseError) as info:
        models.expect_object(["x" * 10_000], "thing")
    assert "thing" in info.value.message
    assert len(info.value.message) < 400


def test_normalise_history_item_fills_missing_keys() -> None:
    item = models.normalise_history_item({"StepID": "s1", "Status": "RUNNING", "extra": 1})
    assert item["stepId"] == "s1"
    assert item["status"] == "RUNNING"
    assert item["extra"] == 1
    assert item["endedAt"] is None
    assert "StepID" not in item
    assert set(item) == {
        "id",
        "instanceId",
        "stepId",
        "stepType",
        "attemptNumber",
        "status",
        "startedAt",
        "endedAt",
        "inputSnapshot",
        "outputSnapshot",
        "failureReason",
        "extra",
    }
