"""The five shared Prometheus metrics, on a fresh registry per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from workflow_sdk.metrics import metrics as metrics_mod
from workflow_sdk.metrics.metrics import Metrics


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def _families(reg: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names other than ``le``)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for family in reg.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels.update(k for k in sample.labels if k != "le")
        out[family.name] = (family.type, labels)
    return out


def test_names_match_the_contract() -> None:
    assert metrics_mod.POLL_LATENCY == "workflow_sdk_poll_latency_seconds"
    assert metrics_mod.LOCK_CONFLICTS == "workflow_sdk_lock_conflicts_total"
    assert metrics_mod.HANDLER_LATENCY == "workflow_sdk_handler_latency_seconds"
    assert metrics_mod.RETRIES == "workflow_sdk_retries_total"
    assert metrics_mod.JOBS_COMPLETED == "workflow_sdk_jobs_completed_total"


def test_types_and_labels(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.set_report_backlog(0, 0.0)
    m.observe_poll(0.01, 0)
    m.observe_handler("score", 0.2)
    m.retry("score")
    m.job_finished("score", "success")
    m.stale_job("score", "instance_cancelled")
    families = _families(reg)
    # prometheus_client names a counter's family without its "_total" suffix.
    assert families["workflow_sdk_poll_latency_seconds"] == ("histogram", set())
    assert families["workflow_sdk_lock_conflicts"] == ("counter", set())
    assert families["workflow_sdk_handler_latency_seconds"] == ("histogram", {"job_type"})
    assert families["workflow_sdk_retries"] == ("counter", {"job_type"})
    assert families["workflow_sdk_jobs_completed"] == ("counter", {"job_type", "outcome"})
    # Beside the five shared ones, this SDK's own.
    assert set(families) - {
        "workflow_sdk_poll_latency_seconds",
        "workflow_sdk_lock_conflicts",
        "workflow_sdk_handler_latency_seconds",
        "workflow_sdk_retries",
        "workflow_sdk_jobs_completed",
    } == {
        "workflow_sdk_stale_jobs",
        "workflow_sdk_reports_pending",
        "workflow_sdk_report_oldest_pending_seconds",
        "workflow_sdk_report_retries",
        "workflow_sdk_reports_given_up",
        "workflow_sdk_lease_renewals",
        "workflow_sdk_malformed_jobs",
    }


def test_the_sdk_metric_names_types_and_labels(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.stale_job("score", "instance_cancelled")
    m.set_report_backlog(3, 12.5)
    m.report_retry("score")
    m.report_given_up("score", "lost")
    m.lease_renewal("accepted")
    families = _families(reg)
    assert families["workflow_sdk_stale_jobs"] == ("counter", {"job_type", "reason"})
    assert families["workflow_sdk_reports_pending"] == ("gauge", set())
    assert families["workflow_sdk_report_oldest_pending_seconds"] == ("gauge", set())
    assert families["workflow_sdk_report_retries"] == ("counter", {"job_type"})
    assert families["workflow_sdk_reports_given_up"] == ("counter", {"job_type", "reason"})
    assert families["workflow_sdk_lease_renewals"] == ("counter", {"result"})
    assert families["workflow_sdk_malformed_jobs"] == ("counter", set())
    assert metrics_mod.REPORTS_PENDING == "workflow_sdk_reports_pending"
    assert metrics_mod.REPORT_OLDEST_AGE == "workflow_sdk_report_oldest_pending_seconds"
    assert metrics_mod.REPORT_RETRIES == "workflow_sdk_report_retries_total"
    assert metrics_mod.REPORTS_GIVEN_UP == "workflow_sdk_reports_given_up_total"
    assert metrics_mod.LEASE_RENEWALS == "workflow_sdk_lease_renewals_total"
    assert metrics_mod.MALFORMED_JOBS == "workflow_sdk_malformed_jobs_total"


def test_report_backlog_gauges(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.set_report_backlog(2, 4.5)
    assert reg.get_sample_value("workflow_sdk_reports_pending") == 2.0
    assert reg.get_sample_value("workflow_sdk_report_oldest_pending_seconds") == 4.5
    # No pending report: no age, whatever the caller computed.
    m.set_report_backlog(0, 9.0)
    assert reg.get_sample_value("workflow_sdk_reports_pending") == 0.0
    assert reg.get_sample_value("workflow_sdk_report_oldest_pending_seconds") == 0.0


def test_gauges_are_live_in_multiprocess_mode(reg: CollectorRegistry) -> None:
    # Set by the supervisor's parent only; a dead process's value must not linger.
    m = Metrics(reg)
    pending, oldest = m.backlog_gauges()
    assert pending._multiprocess_mode == "livesum"
    assert oldest._multiprocess_mode == "livemax"
    assert m.backlog_gauges() == (pending, oldest)


def test_the_gauges_exist_only_once_set(reg: CollectorRegistry) -> None:
    # Worker processes never report: they must not get gauge files.
    m = Metrics(reg)
    assert reg.get_sample_value("workflow_sdk_reports_pending") is None
    m.set_report_backlog(0, 0.0)
    assert reg.get_sample_value("workflow_sdk_reports_pending") == 0.0


def test_lease_renewals_by_result(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    for result in ("accepted", "accepted", "retry", "lease_lost", "unsupported"):
        m.lease_renewal(result)  # type: ignore[arg-type]
    name = "workflow_sdk_lease_renewals_total"
    assert reg.get_sample_value(name, {"result": "accepted"}) == 2.0
    for result in ("retry", "lease_lost", "unsupported"):
        assert reg.get_sample_value(name, {"result": result}) == 1.0


def test_poll_latency_and_lock_conflicts(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    assert reg.get_sample_value("workflow_sdk_lock_conflicts_total") == 0.0
    m.observe_poll(0.05, 0)
    m.observe_poll(0.25, 3)
    m.observe_poll(0.5, 0)
    assert reg.get_sample_value("workflow_sdk_poll_latency_seconds_count") == 3.0
    assert reg.get_sample_value("workflow_sdk_poll_latency_seconds_sum") == pytest.approx(0.8)
    # Only the polls that returned no job count as lock conflicts.
    assert reg.get_sample_value("workflow_sdk_lock_conflicts_total") == 2.0


def test_handler_latency_by_job_type(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.observe_handler("score", 0.2)
    m.observe_handler("score", 3.0)
    m.observe_handler("ship", 0.001)
    name = "workflow_sdk_handler_latency_seconds"
    assert reg.get_sample_value(f"{name}_count", {"job_type": "score"}) == 2.0
    assert reg.get_sample_value(f"{name}_sum", {"job_type": "score"}) == pytest.approx(3.2)
    assert reg.get_sample_value(f"{name}_bucket", {"job_type": "score", "le": "0.25"}) == 1.0
    assert reg.get_sample_value(f"{name}_bucket", {"job_type": "score", "le": "0.1"}) == 0.0
    assert reg.get_sample_value(f"{name}_bucket", {"job_type": "score", "le": "+Inf"}) == 2.0
    assert reg.get_sample_value(f"{name}_count", {"job_type": "ship"}) == 1.0
    # Buckets reach the 30 s lease.
    assert reg.get_sample_value(f"{name}_bucket", {"job_type": "ship", "le": "30.0"}) == 1.0


def test_retries_by_job_type(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.retry("score")
    m.retry("score")
    m.retry("ship")
    assert reg.get_sample_value("workflow_sdk_retries_total", {"job_type": "score"}) == 2.0
    assert reg.get_sample_value("workflow_sdk_retries_total", {"job_type": "ship"}) == 1.0
    assert reg.get_sample_value("workflow_sdk_retries_total", {"job_type": "bill"}) is None


def test_jobs_completed_by_job_type_and_outcome(reg: CollectorRegistry) -> None:
    m = Metrics(reg)
    m.job_finished("score", "success")
    m.job_finished("score", "failure")
    m.job_finished("score", "failure")
    m.job_finished("ship", "success")
    name = "workflow_sdk_jobs_completed_total"
    assert reg.get_sample_value(name, {"job_type": "score", "outcome": "success"}) == 1.0
    assert reg.get_sample_value(name, {"job_type": "score", "outcome": "failure"}) == 2.0
    assert reg.get_sample_value(name, {"job_type": "ship", "outcome": "success"}) == 1.0
    assert reg.get_sample_value(name, {"job_type": "ship", "outcome": "failure"}) is None


def test_twice_on_one_registry_reuses_the_collectors(reg: CollectorRegistry) -> None:
    first = Metrics(reg)
    second = Metrics(reg)
    assert second is first
    assert second.poll_latency is first.poll_latency
    assert second.lock_conflicts is first.lock_conflicts
    assert second.handler_latency is first.handler_latency
    assert second.retries is first.retries
    assert second.jobs_completed is first.jobs_completed
    first.retry("score")
    second.retry("score")
    assert reg.get_sample_value("workflow_sdk_retries_total", {"job_type": "score"}) == 2.0


def test_separate_registries_are_independent() -> None:
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a, b = Metrics(reg_a), Metrics(reg_b)
    assert a is not b
    a.job_finished("t", "success")
    assert (
        reg_a.get_sample_value(
            "workflow_sdk_jobs_completed_total", {"job_type": "t", "outcome": "success"}
        )
        == 1.0
    )
    assert (
        reg_b.get_sample_value(
            "workflow_sdk_jobs_completed_total", {"job_type": "t", "outcome": "success"}
        )
        is None
    )


def test_default_registry_is_prometheus_default() -> None:
    m = Metrics()
    assert m is Metrics(REGISTRY)
    assert m is Metrics(None)
    assert REGISTRY.get_sample_value("workflow_sdk_lock_conflicts_total") is not None


def test_gauges_add_up_in_a_real_multiprocess_directory(tmp_path: Path) -> None:
    # A child process in prometheus multiprocess mode sets the gauges, as the
    # supervisor's parent does; the exporter's collector reads them back.
    script = (
        "from prometheus_client import CollectorRegistry\n"
        "from workflow_sdk.metrics.metrics import Metrics\n"
        "Metrics(CollectorRegistry()).set_report_backlog(4, 7.5)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=str(tmp_path))
    assert reg.get_sample_value("workflow_sdk_reports_pending") == 4.0
    assert reg.get_sample_value("workflow_sdk_report_oldest_pending_seconds") == 7.5
