"""The supervisor's scrape-time collector: the Kafka source's counters, in Kafka mode only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from unit.fakes import StandInSource
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.exposition.exporter import PREFIX, PoolCollector, WorkerView
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.pool import WorkerPool

SNAPSHOT = SourceStats(
    fetched=41,
    duplicates=3,
    held_while_running=2,
    deferred=1,
    malformed=5,
    commits=17,
    commit_errors=4,
    unfinished=6,
    assigned=7,
    revoked=8,
    in_flight=9,
    offsets_pending=12,
    partitions_held_back=2,
)


def no_workers() -> tuple[WorkerView, ...]:
    return ()


def registry(kafka: SourceStats | None) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(
        PoolCollector(SupervisorStats(), no_workers, None if kafka is None else lambda: kafka)
    )
    return reg


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value("workflow_supervisor_" + name, labels)


def test_kafka_mode_shows_every_counter_of_the_snapshot() -> None:
    reg = registry(SNAPSHOT)
    assert value(reg, "kafka_jobs_fetched_total") == 41
    assert value(reg, "kafka_records_skipped_total", reason="duplicate") == 3
    assert value(reg, "kafka_records_skipped_total", reason="held_while_running") == 2
    assert value(reg, "kafka_records_skipped_total", reason="malformed") == 5
    assert value(reg, "kafka_jobs_deferred_total") == 1
    assert value(reg, "kafka_jobs_unfinished_total") == 6
    assert value(reg, "kafka_commits_total") == 17
    assert value(reg, "kafka_commit_errors_total") == 4
    assert value(reg, "kafka_partitions_assigned_total") == 7
    assert value(reg, "kafka_partitions_revoked_total") == 8
    assert value(reg, "kafka_jobs_in_flight") == 9
    assert value(reg, "kafka_offsets_pending") == 12
    assert value(reg, "kafka_partitions_held_back") == 2
    # Beside the pool's own metrics, not instead of them.
    assert value(reg, "workers") == 0


def test_every_kafka_metric_has_its_type_and_is_shown_at_zero_before_it_happens() -> None:
    text = generate_latest(registry(SourceStats())).decode()
    samples = [line for line in text.splitlines() if line.startswith("workflow_supervisor_kafka_")]
    # 3 skip reasons + 7 plain counters, each with its _total sample (and
    # prometheus_client's _created beside it).
    totals = [line for line in samples if line.split("{")[0].split(" ")[0].endswith("_total")]
    assert len(totals) == 10, text
    assert all(line.endswith(" 0.0") for line in totals), totals
    types = [
        line for line in text.splitlines() if line.startswith("# TYPE workflow_supervisor_kafka")
    ]
    gauges = {"kafka_jobs_in_flight", "kafka_offsets_pending", "kafka_partitions_held_back"}
    counters = [line for line in types if line.split()[2].removeprefix(PREFIX) not in gauges]
    # The skip counter (one family, 3 reasons) and the 7 plain ones.
    assert len(counters) == 8 and all(line.endswith(" counter") for line in counters), types
    for gauge in gauges:
        assert f"# TYPE {PREFIX}{gauge} gauge" in types, types
        assert f"{PREFIX}{gauge} 0.0" in samples, samples
    for reason in ("duplicate", "held_while_running", "malformed"):
        assert f'workflow_supervisor_kafka_records_skipped_total{{reason="{reason}"}} 0.0' in text


def test_each_scrape_reads_a_fresh_snapshot() -> None:
    current = [SourceStats()]
    reg = CollectorRegistry()
    reg.register(PoolCollector(SupervisorStats(), no_workers, lambda: current[0]))
    assert reg.get_sample_value("workflow_supervisor_kafka_commits_total") == 0
    current[0] = SourceStats(commits=3, fetched=2)
    assert reg.get_sample_value("workflow_supervisor_kafka_commits_total") == 3
    assert reg.get_sample_value("workflow_supervisor_kafka_jobs_fetched_total") == 2


def test_poll_mode_shows_no_kafka_metric() -> None:
    text = generate_latest(registry(None)).decode()
    assert "workflow_supervisor_workers " in text
    assert "workflow_supervisor_kafka_" not in text


class StandInFeeder(StandInSource):
    def stats(self) -> SourceStats:
        return SNAPSHOT


def test_the_intake_shows_zeros_until_the_kafka_feeder_starts() -> None:
    intake = Intake(WorkerPool(1), JobLedger(2), ClaimPolicy(), SupervisorStats(), 1.0)
    assert intake.source_stats() == SourceStats()
    feeder = StandInFeeder()
    intake.open(lambda job_types, wake: feeder, ("a",), lambda: None)  # type: ignore[arg-type, return-value]
    assert intake.source_stats() is SNAPSHOT


def test_each_worker_shows_its_rss_uss_and_pss_and_memory_kills_have_their_reason() -> None:
    """USS and PSS come from the main loop's last sample (a worker without one
    yet shows none); every restart reason, memory_kill included, at 0."""
    views = (
        WorkerView(1, 101, True, None, uss=20 * 2**20, pss=120 * 2**20),
        WorkerView(2, 102, False, None),
    )
    reg = CollectorRegistry()
    reg.register(PoolCollector(SupervisorStats(), lambda: views))
    assert value(reg, "worker_uss_bytes", slot="1") == 20 * 2**20
    assert value(reg, "worker_pss_bytes", slot="1") == 120 * 2**20
    assert value(reg, "worker_uss_bytes", slot="2") is None
    text = generate_latest(reg).decode()
    assert "# TYPE workflow_supervisor_worker_uss_bytes gauge" in text
    assert "# TYPE workflow_supervisor_worker_pss_bytes gauge" in text
    for reason in ("memory_kill", "recycle_memory"):
        assert value(reg, "worker_restarts_total", reason=reason, job_type="") == 0
