"""The supervisor in Kafka dispatch mode: a real broker, a real LocalEngine, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from process.conftest import SupervisorProcess, wait_for
from process.process_support import metrics_url, sample
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .kafka_support import create_topics, publish, read_records, service_flow

pytestmark = pytest.mark.slow

HANDLERS = """
import os
import time
from pathlib import Path

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()
RUNS = Path(os.environ.get("KAFKA_TEST_RUNS", "."))


@registry.register("{job_type}")
def work(job):
    # One line per run, in a file per process (appends of one short line).
    with (RUNS / f"{{os.getpid()}}.txt").open("a") as out:
        out.write(job["id"] + "\\n")
    time.sleep(float(job["variables"].get("seconds", 0.005)))
    if job["variables"].get("fail_first") and job["retriesRemaining"] > 0:
        raise RuntimeError("first attempt fails")
    return {{"done": True}}
"""


@pytest.fixture
def job_type(unique: str) -> str:
    return f"kjob-{unique}"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def start(
    tmp_path: Path,
    kafka_engine: LocalEngine,
    *,
    kafka_bootstrap: str,
    job_type: str,
    unique: str,
    runs_dir: Path,
) -> Iterator[Callable[..., SupervisorProcess]]:
    (tmp_path / f"kafka_handlers_{unique}.py").write_text(HANDLERS.format(job_type=job_type))
    started: list[SupervisorProcess] = []

    def run(
        workers: int = 2, dispatch: str = "kafka", extra: str = "", engine: str = "timeout = 5"
    ) -> SupervisorProcess:
        config = tmp_path / "supervisor.toml"
        config.write_text(
            f'[engine]\nurl = "{kafka_engine.url}"\n{engine}\ndispatch = "{dispatch}"\n'
            f'[supervisor]\nhandlers = ["kafka_handlers_{unique}:registry"]\n'
            f"workers = {workers}\npoll_interval = 0.1\ngraceful_timeout = 20\n"
            f'[kafka]\nbrokers = ["{kafka_bootstrap}"]\ngroup = "sv-{unique}.{{job_type}}"\n'
            f"{extra}\n"
        )
        env = dict(os.environ, KAFKA_TEST_RUNS=str(runs_dir))
        env.pop("ROCHALLOR_ENGINE_URL", None)
        process = SupervisorProcess(config, tmp_path, env)
        started.append(process)
        return process

    yield run
    for process in started:
        process.reap()


def runs(runs_dir: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in runs_dir.glob("*.txt"):
        counts.update(path.read_text().split())
    return counts


def busy_worker(sv: SupervisorProcess) -> psutil.Process:
    def find() -> psutil.Process | None:
        for worker in sv.workers():
            try:
                if "busy" in " ".join(worker.cmdline()):
                    return worker
            except psutil.Error:
                continue
        return None

    found: psutil.Process = wait_for(find, 20, "a busy worker")
    return found


def test_300_jobs_survive_a_killed_worker_and_a_restart(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    *,
    start: Callable[..., SupervisorProcess],
    kafka_bootstrap: str,
    job_type: str,
    runs_dir: Path,
) -> None:
    create_topics(kafka_bootstrap, [job_type], partitions=3)
    client.upload_definition(service_flow("kflow", job_type, retries=2))
    ids = [client.start_instance("kflow", {"seconds": 0.02})["id"] for _ in range(300)]
    sv = start(workers=2)

    def completed() -> int:
        return sum(1 for i in kafka_engine.instances() if i["status"] == "COMPLETED")

    wait_for(lambda: completed() >= 60, 60, "60 completed instances")
    victim = busy_worker(sv)
    victim.kill()
    wait_for(lambda: completed() >= 150, 60, "150 completed instances")
    sv.signal(signal.SIGTERM)
    assert sv.wait(40) == 0
    log = sv.log()
    assert "killed by SIGKILL" in log
    second = start(workers=2)
    kafka_engine.wait_for_instances(ids, "COMPLETED", timeout=120)
    second.signal(signal.SIGTERM)
    assert second.wait(40) == 0
    counts = runs(runs_dir)
    jobs = {job["id"] for job in kafka_engine.jobs(job_type=job_type)}
    assert set(counts) == jobs
    twice = {job for job, n in counts.items() if n > 1}
    assert max(counts.values()) <= 2
    # Only the interrupted job runs again (its retry): a clean TERM commits
    # what finished, so the restarted supervisor reruns nothing else.
    interrupted = {
        line.split("job ", 1)[1].split(" ", 1)[0]
        for line in log.splitlines()
        if "killed by SIGKILL" in line and "running this job" in line
    }
    assert twice <= interrupted, (twice, interrupted)


def test_a_duplicate_dispatch_runs_once_and_metrics_count_it(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    *,
    start: Callable[..., SupervisorProcess],
    kafka_bootstrap: str,
    job_type: str,
    runs_dir: Path,
) -> None:
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow("dup", job_type))
    (iid,) = [client.start_instance("dup", {"seconds": 0.5})["id"]]
    kafka_engine.publisher.wait_published(1)  # type: ignore[union-attr]
    # The engine's relay publishing the same dispatch again after a crash.
    (record,) = read_records(kafka_bootstrap, f"workflow.jobs.{job_type}", 1)
    publish(kafka_bootstrap, job_type, [(record.value(), record.headers())], key=record.key())
    # And a record that is no dispatch at all: skipped, counted.
    publish(kafka_bootstrap, job_type, [(b"not a dispatch", [])])
    sv = start(workers=2, extra="[metrics]\nport = 0\n")
    url = metrics_url(sv)
    kafka_engine.wait_for_instance(iid, "COMPLETED", timeout=60)
    # Give the duplicate every chance to run: more jobs behind it complete.
    more = [client.start_instance("dup", {"seconds": 0.01})["id"] for _ in range(5)]
    kafka_engine.wait_for_instances(more, "COMPLETED", timeout=60)
    ran = sum(runs(runs_dir).values())
    assert ran == 6

    def committed() -> str | None:
        # Offsets are committed shortly after the last results reached the engine.
        text = requests.get(url, timeout=5).text
        return text if sample(text, "workflow_supervisor_kafka_commits_total") > 0 else None

    text = wait_for(committed, 20, "a Kafka offset commit counted in /metrics")
    assert sample(text, "workflow_supervisor_kafka_jobs_fetched_total") == ran
    skipped = "workflow_supervisor_kafka_records_skipped_total"
    # The duplicate is fetched while its dispatch runs (held) or after (deduplicated).
    assert (
        sample(text, skipped, reason="duplicate")
        + sample(text, skipped, reason="held_while_running")
        == 1
    )
    assert sample(text, skipped, reason="malformed") == 1
    assert sample(text, "workflow_supervisor_kafka_partitions_assigned_total") >= 1
    assert sample(text, "workflow_supervisor_kafka_commit_errors_total") == 0
    assert sample(text, "workflow_supervisor_kafka_jobs_unfinished_total") == 0
    assert sample(text, "workflow_supervisor_jobs_claimed_total") == ran

    def all_committed() -> str | None:
        # Every job done and every record's offset committed: both gauges back at 0.
        text = requests.get(url, timeout=5).text
        gauges = (
            "workflow_supervisor_kafka_jobs_in_flight",
            "workflow_supervisor_kafka_offsets_pending",
        )
        return text if all(sample(text, g) == 0 for g in gauges) else None

    wait_for(all_committed, 20, "no Kafka job in flight and no offset pending in /metrics")
    sv.signal(signal.SIGTERM)
    assert sv.wait(30) == 0
    (job,) = kafka_engine.jobs(instance_id=iid)
    assert runs(runs_dir)[job["id"]] == 1
    assert job["completeCalls"] == 1


def test_a_missing_topic_is_named_by_check_and_at_start(
    kafka_engine: LocalEngine, start: Callable[..., SupervisorProcess], job_type: str
) -> None:
    sv = start(workers=1)
    assert sv.wait(30) == 2
    assert f"workflow.jobs.{job_type}" in sv.log()
    assert "do not exist" in sv.log()
    result = subprocess.run(
        [sys.executable, "-m", "workflow_sdk.supervisor", "check", "-c", str(sv.config_path)],
        cwd=sv.config_path.parent,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert f"missing topic(s) workflow.jobs.{job_type}" in result.stderr


def test_poll_mode_against_a_kafka_engine_stops_with_what_to_set(
    kafka_engine: LocalEngine, start: Callable[..., SupervisorProcess]
) -> None:
    sv = start(workers=1, dispatch="poll")
    assert sv.wait(30) == 2
    log = sv.log()
    assert 'dispatch = "kafka"' in log
    assert log.count("poll failed") == 0  # not a retry loop


def test_reports_whose_answers_are_lost_are_resolved_and_their_offsets_committed(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    *,
    start: Callable[..., SupervisorProcess],
    kafka_bootstrap: str,
    job_type: str,
    runs_dir: Path,
) -> None:
    """Issue 16 bug 1: in Kafka mode a report that ended LOST (its answer
    timed out) left its record unfinished at the head of its partition for
    good: nothing was committable after it, and a restart ran every later
    record again. Here every answer comes after the client's 0.5 s timeout:
    completes are applied 1.5 s after they arrive, a fail's answer is held
    1.5 s after it was applied. The supervisor asks the engine what became
    of each report (a completed step; the engine's dispatch of the retry),
    sends nothing twice, and commits every offset."""
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow("lostans", job_type, retries=1))
    kafka_engine.complete_delay = 1.5
    kafka_engine.fail_answer_delay = 1.5
    ids = [client.start_instance("lostans", {"fail_first": True})["id"]]
    ids += [client.start_instance("lostans", {})["id"] for _ in range(2)]
    sv = start(
        workers=2,
        engine="timeout = 0.5\nin_flight_window = 20",
        extra="[metrics]\nport = 0\n",
    )
    url = metrics_url(sv)
    kafka_engine.wait_for_instances(ids, "COMPLETED", timeout=60)

    def all_committed() -> str | None:
        text = requests.get(url, timeout=5).text
        gauges = (
            "workflow_supervisor_kafka_jobs_in_flight",
            "workflow_supervisor_kafka_offsets_pending",
        )
        return text if all(sample(text, g) == 0 for g in gauges) else None

    text = wait_for(all_committed, 30, "every Kafka offset committed")
    assert sample(text, "workflow_supervisor_kafka_jobs_unfinished_total") == 0
    jobs = kafka_engine.jobs(job_type=job_type)
    assert sorted(job["completeCalls"] for job in jobs) == [1, 1, 1]
    assert sorted(job["failCalls"] for job in jobs) == [0, 0, 1]
    assert kafka_engine.counters["overlapping_completes"] == 0
    sv.signal(signal.SIGTERM)
    assert sv.wait(30) == 0
    log = sv.log()
    assert "LOST" not in log
    assert "reached the engine after all" in log
