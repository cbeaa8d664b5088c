"""The job rules both runtimes share (``workflow_sdk.jobcore``)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from workflow_sdk import jobcore
from workflow_sdk.client import models
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.runner import runner as runner_module


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics._registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def success(duration: float = 0.5) -> Outcome:
    return Outcome("j1", "score", True, {"x": 1}, "", True, duration)


def failure(*, retryable: bool = True) -> Outcome:
    return Outcome.failure("j1", "score", "boom", retryable=retryable, duration=0.25)


# -- validation, worker id ----------------------------------------------------


def test_a_good_job_has_no_problem() -> None:
    assert jobcore.job_problem({"id": "j1", "jobType": "score"}) is None


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (None, "not a JSON object"),
        ("j1", "not a JSON object"),
        ({"jobType": "score"}, "no id"),
        ({"id": "", "jobType": "score"}, "no id"),
        ({"id": 7, "jobType": "score"}, "no id"),
        ({"id": "j1"}, "job j1 has no jobType"),
        ({"id": "j1", "jobType": None}, "job j1 has no jobType"),
    ],
)
def test_malformed_jobs_say_why(job: object, expected: str) -> None:
    problem = jobcore.job_problem(job)
    assert problem is not None and problem.startswith(expected)


def test_a_huge_job_is_cut_in_the_message() -> None:
    problem = jobcore.job_problem({"id": "", "blob": "x" * 10_000})
    assert problem is not None and len(problem) < 400


def test_usable_jobs_keeps_good_ones_and_logs_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good: dict[str, Any] = {"id": "j1", "jobType": "score"}
    with caplog.at_level(logging.ERROR):
        kept = jobcore.usable_jobs([good, {"id": "j2"}, 3], logging.getLogger("t"))
    assert kept == [good]
    assert len(caplog.records) == 2
    assert "malformed" in caplog.records[0].getMessage()


def test_usable_jobs_counts_the_jobs_left_out_here_and_by_the_client() -> None:
    reg = CollectorRegistry()
    metrics = Metrics(reg)
    logger = logging.getLogger("t")
    good = {"id": "j1", "jobType": "t", "instanceId": "i"}
    answer = models.parse_poll({"jobs": [good, {"jobType": "t", "instanceId": "i"}]})
    assert len(answer.malformed) == 1
    kept = jobcore.usable_jobs(answer, logger, metrics)
    assert [job["id"] for job in kept] == ["j1"]
    assert reg.get_sample_value("workflow_sdk_malformed_jobs_total") == 1.0
    # A client of one's own may pass anything on: left out here, counted too.
    jobcore.usable_jobs([{"id": "j2"}, {"id": "j3", "jobType": "t"}], logger, metrics)
    assert reg.get_sample_value("workflow_sdk_malformed_jobs_total") == 2.0
    jobcore.usable_jobs([{"id": "j4", "jobType": "t"}], logger, metrics)
    assert reg.get_sample_value("workflow_sdk_malformed_jobs_total") == 2.0


def test_default_worker_id_is_host_and_pid_and_the_runner_reexports_it() -> None:
    assert jobcore.default_worker_id() == f"{socket.gethostname()}-{os.getpid()}"
    assert runner_module.default_worker_id is jobcore.default_worker_id


def test_no_handler_outcome_is_retryable_and_names_the_worker() -> None:
    outcome = jobcore.no_handler_outcome("j1", "score", "w-7")
    assert not outcome.succeeded and outcome.retryable
    assert "'score'" in outcome.error_message and "w-7" in outcome.error_message


# -- poll outage log ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outage_log_warns_once_then_every_n_seconds_then_says_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = jobcore.PollOutageLog(logging.getLogger("t.outage"), 60.0, clock=clock)
    error = EngineConnectionError("refused", request_sent=False)
    with caplog.at_level(logging.DEBUG, logger="t.outage"):
        outage.failed(error, 0.1)
        for _ in range(5):
            clock.now += 10
            outage.failed(error, 0.2)  # 10..50 s: DEBUG only
        clock.now += 10
        outage.failed(error, 0.4)  # 60 s: a second WARNING
        clock.now += 1
        outage.succeeded()
        outage.succeeded()  # no outage: nothing
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for lvl, m in levels if lvl == logging.WARNING]
    infos = [m for lvl, m in levels if lvl == logging.INFO]
    assert len(warnings) == 2
    assert "logged every 60 s" in warnings[0] and "refused" in warnings[0]
    assert "still failing for 60 s (7 attempts)" in warnings[1]
    assert infos == ["engine reachable again after 7 failed polls over 61.0 s"]
    assert sum(1 for lvl, _ in levels if lvl == logging.DEBUG) == 5
    assert outage.failures == 0


def test_outage_log_adds_a_traceback_only_for_unexpected_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = jobcore.PollOutageLog(logging.getLogger("t.tb"))
    with caplog.at_level(logging.WARNING, logger="t.tb"):
        outage.failed(EngineConnectionError("refused", request_sent=False), 0.1)
        outage.succeeded()
        outage.failed(TypeError("bug"), 0.1)
    assert caplog.records[0].exc_info is None
    exc_info = caplog.records[-1].exc_info
    assert exc_info is not None and isinstance(exc_info[1], TypeError)


# -- the shared metrics ----------------------------------------------------------------


def test_a_delivered_success_counts_latency_and_success(metrics: Metrics) -> None:
    jobcore.record_outcome(metrics, success(0.5), 3, ReportStatus.DELIVERED)
    assert value(metrics, "workflow_sdk_handler_latency_seconds_count", job_type="score") == 1
    assert value(metrics, "workflow_sdk_handler_latency_seconds_sum", job_type="score") == 0.5
    assert (
        value(metrics, "workflow_sdk_jobs_completed_total", job_type="score", outcome="success")
        == 1
    )
    assert value(metrics, "workflow_sdk_retries_total", job_type="score") == 0


@pytest.mark.parametrize(
    ("outcome", "retries", "status", "counted"),
    [
        (failure(), 2, ReportStatus.DELIVERED, 1),
        (failure(), 0, ReportStatus.DELIVERED, 0),  # no retries left: the job failed
        (failure(retryable=False), 2, ReportStatus.DELIVERED, 0),
        (failure(), 2, ReportStatus.LOST, 0),  # the engine never acknowledged it
        (failure(), 2, ReportStatus.WITHHELD, 0),
        (failure(), 2, ReportStatus.STALE, 0),
        (failure(), 2, None, 0),
        (failure(), None, ReportStatus.DELIVERED, 0),
        (failure(), True, ReportStatus.DELIVERED, 0),  # a bool is not a count
        (success(), 2, ReportStatus.DELIVERED, 0),
    ],
)
def test_a_retry_is_counted_only_once_the_engine_acknowledged_the_fail(
    metrics: Metrics,
    outcome: Outcome,
    retries: object,
    status: ReportStatus | None,
    counted: int,
) -> None:
    jobcore.record_outcome(metrics, outcome, retries, status)
    assert value(metrics, "workflow_sdk_retries_total", job_type="score") == counted
    kind = "success" if outcome.succeeded else "failure"
    assert value(metrics, "workflow_sdk_jobs_completed_total", job_type="score", outcome=kind) == 1


def test_a_job_with_no_handler_is_a_failure_without_latency(metrics: Metrics) -> None:
    outcome = jobcore.no_handler_outcome("j1", "score", "w")
    jobcore.record_outcome(metrics, outcome, 3, ReportStatus.DELIVERED, handler_ran=False)
    assert (
        value(metrics, "workflow_sdk_jobs_completed_total", job_type="score", outcome="failure")
        == 1
    )
    assert value(metrics, "workflow_sdk_handler_latency_seconds_count", job_type="score") == 0
    assert value(metrics, "workflow_sdk_retries_total", job_type="score") == 1


def test_stale_and_given_up_reports_are_counted_by_reason(metrics: Metrics) -> None:
    jobcore.record_outcome(
        metrics, failure(), 2, ReportStatus.STALE, stale_reason="instance_cancelled"
    )
    jobcore.record_outcome(metrics, failure(), 2, ReportStatus.STALE, stale_reason="")
    jobcore.record_outcome(metrics, success(), 2, ReportStatus.LOST)
    jobcore.record_outcome(metrics, failure(), 2, ReportStatus.REJECTED)
    jobcore.record_outcome(metrics, failure(), 2, ReportStatus.WITHHELD)
    jobcore.record_outcome(metrics, success(), 2, None)  # nothing sent on purpose
    stale = "workflow_sdk_stale_jobs_total"
    assert value(metrics, stale, job_type="score", reason="instance_cancelled") == 1
    assert value(metrics, stale, job_type="score", reason="unknown") == 1
    given_up = "workflow_sdk_reports_given_up_total"
    for reason in ("lost", "rejected", "withheld"):
        assert value(metrics, given_up, job_type="score", reason=reason) == 1
    assert value(metrics, given_up, job_type="score", reason="delivered") == 0
