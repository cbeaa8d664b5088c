"""The lease rules: length and deadline from the engine's lockedAt/lockExpiresAt,
when to renew, what a renewal grants, when a job is let go."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.client import models
from workflow_sdk.handler.context import build_context
from workflow_sdk.lease import (
    DEFAULT_LEASE_SECONDS,
    is_settled,
    lease_deadline,
    lease_seconds,
    next_renewal,
    renewal_interval,
    renewal_retry_at,
    renewed_lease_end,
    renewed_length,
)
from workflow_sdk.reporting import ReportStatus


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


def test_a_lease_is_renewed_a_third_of_the_way_unless_an_interval_is_set() -> None:
    assert renewal_interval(None, 30.0) == pytest.approx(10.0)
    assert renewal_interval(0, 30.0) == pytest.approx(10.0)
    assert renewal_interval(4.0, 30.0) == 4.0


def test_a_renewal_is_due_one_interval_later_but_a_tenth_of_the_lease_before_its_end() -> None:
    # Claimed at 100 with a 30 s lease (ends at 130).
    assert next_renewal(100.0, 10.0, 130.0, 30.0) == pytest.approx(110.0)
    # An interval longer than the lease allows: 3 s (a tenth) before the end,
    # for the Runner and the supervisor alike (the Runner used to wait until
    # 50 ms before it).
    assert next_renewal(100.0, 29.99, 130.0, 30.0) == pytest.approx(127.0)
    assert next_renewal(100.0, 60.0, 130.0, 30.0) == pytest.approx(127.0)


def test_a_failed_renewal_is_retried_after_its_backoff_within_the_lease() -> None:
    assert renewal_retry_at(100.0, 0.5, 130.0) == pytest.approx(100.5)
    # A long backoff: halfway to the lease's end at the latest.
    assert renewal_retry_at(100.0, 30.0, 110.0) == pytest.approx(105.0)
    # The lease has passed: after the backoff (no busy retry against a down engine).
    assert renewal_retry_at(100.0, 2.0, 90.0) == pytest.approx(102.0)


def test_a_renewal_grants_the_length_asked_for_from_its_send_time_never_less() -> None:
    assert renewed_length(60, 30.0) == 60.0
    assert renewed_length(0, 30.0) == 30.0  # nothing asked: the engine's default
    assert renewed_length(None, 45.0) == 45.0
    assert renewed_lease_end(130.0, 125.0, 30.0) == pytest.approx(155.0)
    # A re-delivery's lease (known to end later) is not shortened.
    assert renewed_lease_end(170.0, 125.0, 30.0) == 170.0


@pytest.mark.parametrize(
    ("status", "settled"),
    [
        (ReportStatus.DELIVERED, True),
        (ReportStatus.STALE, True),
        (ReportStatus.REJECTED, True),
        (ReportStatus.LOST, False),
        (ReportStatus.WITHHELD, False),
    ],
)
def test_a_job_is_let_go_once_its_report_is_delivered_stale_or_rejected(
    status: ReportStatus, settled: bool
) -> None:
    """One rule for the supervisor (a Kafka record's commit, a poll job's
    release) and the KafkaRunner (mark_done or mark_unfinished)."""
    assert is_settled(status) is settled


def test_the_runner_plans_its_first_renewal_by_the_same_rule() -> None:
    """Pins: the Runner's watch planned a renewal up to 50 ms before the
    lease's end (``_RENEWAL_MARGIN``), the supervisor's a tenth of the
    lease before it: one rule now, a tenth of the lease."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from workflow_sdk.metrics.metrics import Metrics  # noqa: PLC0415
    from workflow_sdk.runner.watch import JobWatch  # noqa: PLC0415

    watch = JobWatch(
        object(),
        "w",
        Metrics(CollectorRegistry()),
        heartbeat=True,
        lease_seconds=None,
        heartbeat_interval=29.99,
        stale_check_interval=0.0,
    )
    entry = watch.add({"id": "j", "jobType": "t"}, lease_end=130.0, lease_length=30.0)
    assert entry.next_renewal == pytest.approx(127.0)
    assert entry.next_renewal == next_renewal(100.0, 29.99, 130.0, 30.0)
