"""Lease length and deadline from the engine's lockedAt/lockExpiresAt."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.client import models
from workflow_sdk.handler.context import build_context
from workflow_sdk.lease import DEFAULT_LEASE_SECONDS, lease_deadline, lease_seconds


def test_default_is_thirty_seconds() -> None:
    assert DEFAULT_LEASE_SECONDS == 30.0


@pytest.mark.parametrize(
    ("locked", "expires", "length"),
    [
        ("2024-03-01T12:00:00Z", "2024-03-01T12:00:30Z", 30.0),
        ("2024-03-01T12:00:00.123456+02:00", "2024-03-01T12:00:30.123456+02:00", 30.0),
        # Same engine clock, written in different zones.
        ("2024-03-01T12:00:00.5+02:00", "2024-03-01T10:00:30.5Z", 30.0),
        ("2024-03-01T04:30:00-0530", "2024-03-01T10:00:45Z", 45.0),
        ("2024-03-01 12:00:00+01:00", "2024-03-01T12:10:00+01:00", 600.0),
        ("2024-03-01T12:00:00.9Z", "2024-03-01T12:00:12.4Z", 11.5),
        # Across midnight and a date change in another zone.
        ("2024-03-01T23:59:50-01:00", "2024-03-02T01:00:20Z", 30.0),
    ],
)
def test_lease_length_from_stamps(locked: str, expires: str, length: float) -> None:
    job = {"id": "j", "lockedAt": locked, "lockExpiresAt": expires}
    assert lease_seconds(job) == pytest.approx(length)


@pytest.mark.parametrize(
    "job",
    [
        {},
        {"lockedAt": "2024-03-01T12:00:00Z"},
        {"lockExpiresAt": "2024-03-01T12:00:45Z"},
        {"lockedAt": None, "lockExpiresAt": "2024-03-01T12:00:45Z"},
        {"lockedAt": "2024-03-01T12:00:00Z", "lockExpiresAt": "later"},
        {"lockedAt": "garbage", "lockExpiresAt": "2024-03-01T12:00:45Z"},
        {"lockedAt": "2024-03-01T12:00:00", "lockExpiresAt": "2024-03-01T12:00:45"},
        {"lockedAt": 1709290800, "lockExpiresAt": 1709290845},
        {"lockedAt": "2024-03-01T12:00:00Z", "lockExpiresAt": "2024-03-01T12:00:00Z"},
        {"lockedAt": "2024-03-01T12:00:45Z", "lockExpiresAt": "2024-03-01T12:00:00Z"},
    ],
)
def test_missing_garbage_or_non_positive_stamps_use_the_default(job: dict[str, Any]) -> None:
    assert lease_seconds(job) == 30.0


def test_deadline_is_poll_send_time_plus_lease() -> None:
    job = {"lockedAt": "2024-03-01T12:00:00Z", "lockExpiresAt": "2024-03-01T12:00:12.5Z"}
    assert lease_deadline(job, 1000.0) == pytest.approx(1012.5)
    assert lease_deadline({}, 50.25) == pytest.approx(80.25)


def test_a_parsed_job_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {
        "id": "j",
        "instanceId": "i",
        "jobType": "t",
        "lockedAt": "2024-03-01T12:00:00Z",
        "lockExpiresAt": "2024-03-01T12:00:12.5Z",
    }
    calls: list[str] = []
    real = models.parse_timestamp

    def counting(value: str) -> Any:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(models, "parse_timestamp", counting)
    job = models.parse_job(raw)
    assert len(calls) == 2  # each stamp once, while the job is checked
    assert lease_seconds(job) == pytest.approx(12.5)
    assert lease_deadline(job, 100.0) == pytest.approx(112.5)
    assert len(calls) == 2
    # The handler's view is unchanged by the parsed form.
    assert build_context(job) == build_context(dict(job))
    # A plain copy is parsed here, to the same length.
    assert lease_seconds(dict(job)) == pytest.approx(12.5)
    assert len(calls) == 4


def test_non_positive_parsed_length_uses_the_default() -> None:
    job = models.parse_job(
        {
            "id": "j",
            "instanceId": "i",
            "jobType": "t",
            "lockedAt": "2024-03-01T12:00:45Z",
            "lockExpiresAt": "2024-03-01T12:00:00Z",
        }
    )
    assert lease_seconds(job) == 30.0
