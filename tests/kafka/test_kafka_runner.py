"""KafkaRunner end to end: LocalEngine(dispatch="kafka"), a real broker, REST reports."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from runner_support import run_in_thread
from runner_support import wait_until as poll_until
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner.kafka_runner import KafkaRunner
from workflow_sdk.testing import LocalEngine

from .kafka_support import create_topics, publish, read_records, service_flow

TIMEOUT = 60.0
HERE = Path(__file__).resolve().parent


#: For counters that have no condition to wait on.
wait_until = partial(poll_until, timeout=TIMEOUT, pause=0.02)


@contextmanager
def running(
    bootstrap: str,
    client: RestEngineClient,
    job_type: str,
    handler: Callable[[dict[str, Any]], Any],
    **kwargs: Any,
) -> Iterator[KafkaRunner]:
    registry = HandlerRegistry()
    registry.register(job_type, handler)
    kwargs.setdefault("drain_timeout", 10.0)
    runner = KafkaRunner(
        "kafka-worker", bootstrap, client, registry, metrics=Metrics(CollectorRegistry()), **kwargs
    )
    with run_in_thread(runner, TIMEOUT, name="kafka-runner"):
        yield runner


def test_jobs_run_to_completion(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"many-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=3)
    client.upload_definition(service_flow(f"wf-{unique}", job_type))
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        with lock:
            calls[job["id"]] += 1
        return {"doubled": job["variables"]["n"] * 2}

    ids = [client.start_instance(f"wf-{unique}", {"n": n})["id"] for n in range(40)]
    with running(kafka_bootstrap, client, job_type, handler, parallelism=4) as runner:
        done = kafka_engine.wait_for_instances(ids, timeout=TIMEOUT)
        assert wait_until(lambda: runner.stats.completed == 40)
    assert [i["variables"]["doubled"] for i in done] == [n * 2 for n in range(40)]
    assert len(calls) == 40 and set(calls.values()) == {1}


def test_a_duplicate_dispatch_runs_once(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"dup-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type))
    calls: list[str] = []
    instance = client.start_instance(f"wf-{unique}")
    [record] = read_records(kafka_bootstrap, f"workflow.jobs.{job_type}", 1)
    with running(kafka_bootstrap, client, job_type, lambda job: calls.append(job["id"])) as runner:
        kafka_engine.wait_for_instance(instance["id"], timeout=TIMEOUT)
        # The relay publishes the same dispatch again (same dedup_id), as after a crash.
        publish(
            kafka_bootstrap,
            job_type,
            [(record.value(), record.headers())],
            key=record.key(),
        )
        source = runner.source
        assert source is not None
        assert wait_until(lambda: source.stats.duplicates == 1)
    assert len(calls) == 1
    assert kafka_engine.complete_calls(calls[0]) == 1


def test_a_retryable_failure_is_redelivered_by_the_new_dispatch(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"flaky-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=1))
    seen: list[int] = []

    def flaky(job: dict[str, Any]) -> dict[str, Any]:
        seen.append(job["retriesRemaining"])
        if len(seen) == 1:
            raise RuntimeError("first attempt fails")
        return {"attempts": len(seen)}

    instance = client.start_instance(f"wf-{unique}")
    with running(kafka_bootstrap, client, job_type, flaky):
        done = kafka_engine.wait_for_instance(instance["id"], timeout=TIMEOUT)
    assert done["variables"]["attempts"] == 2
    assert seen == [1, 0]
    [job] = kafka_engine.jobs(job_type=job_type)
    assert (job["failCalls"], job["completeCalls"]) == (1, 1)


def test_stop_drains_running_jobs_and_commits_them(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"drain-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type))
    release = threading.Event()
    started: list[str] = []

    def slow(job: dict[str, Any]) -> None:
        started.append(job["id"])
        release.wait(TIMEOUT)

    ids = [client.start_instance(f"wf-{unique}")["id"] for _ in range(3)]
    with running(kafka_bootstrap, client, job_type, slow, parallelism=3) as runner:
        assert wait_until(lambda: len(started) == 3)
        runner.stop()
        # The handlers finish after the stop: the drain waits for them.
        release.set()
    kafka_engine.wait_for_instances(ids, timeout=TIMEOUT)
    assert runner.stats.completed == 3
    assert runner.stats.abandoned_at_stop == 0

    # A new runner in the same group starts after the committed offsets: it
    # runs only the job published after the first runner stopped.
    second_calls: list[str] = []
    with running(kafka_bootstrap, client, job_type, lambda job: second_calls.append(job["id"])):
        last = client.start_instance(f"wf-{unique}")["id"]
        kafka_engine.wait_for_instance(last, timeout=TIMEOUT)
    assert second_calls == [kafka_engine.jobs(instance_id=last)[0]["id"]]


def test_sigterm_drains_running_jobs_and_commits_them(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
) -> None:
    job_type = f"term-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type))
    ids = [client.start_instance(f"wf-{unique}")["id"] for _ in range(3)]
    started = tmp_path / "started"
    host = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "runner_host.py"),
            kafka_bootstrap,
            kafka_engine.url,
            job_type,
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: started.exists() and len(started.read_text().split()) == 3), (
            "the runner process did not start its 3 jobs"
        )
        host.send_signal(signal.SIGTERM)
        (tmp_path / "release").touch()  # the handlers finish during the drain
        out, _ = host.communicate(timeout=TIMEOUT)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 0
    assert "completed=3 abandoned=0" in out
    kafka_engine.wait_for_instances(ids, timeout=TIMEOUT)

    # The offsets were committed: a new member of the group runs only new work.
    calls: list[str] = []
    with running(kafka_bootstrap, client, job_type, lambda job: calls.append(job["id"])):
        last = client.start_instance(f"wf-{unique}")["id"]
        kafka_engine.wait_for_instance(last, timeout=TIMEOUT)
    assert calls == [kafka_engine.jobs(instance_id=last)[0]["id"]]


def test_reports_whose_answers_are_lost_are_resolved_and_committed(
    kafka_engine: LocalEngine, kafka_bootstrap: str, unique: str
) -> None:
    """Issue 16 bug 1 in the KafkaRunner: a report whose answer timed out
    ended LOST and its record stayed unfinished (its comment said the group
    would deliver it again; a running consumer does not). Every answer here
    comes after the client's 0.5 s timeout: the runner asks the engine what
    became of each report, sends nothing twice and commits every offset."""
    job_type = f"lost-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    kafka_engine.complete_delay = 1.5
    kafka_engine.fail_answer_delay = 1.5
    with RestEngineClient(kafka_engine.url, timeout=0.5, pool_size=8) as slow_client:
        slow_client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=1))

        def handler(job: dict[str, Any]) -> dict[str, Any]:
            if job["variables"].get("fail_first") and job["retriesRemaining"] > 0:
                raise RuntimeError("first attempt fails")
            return {"done": True}

        ids = [slow_client.start_instance(f"wf-{unique}", {"fail_first": True})["id"]]
        ids += [slow_client.start_instance(f"wf-{unique}", {})["id"] for _ in range(2)]
        with running(
            kafka_bootstrap, slow_client, job_type, handler, in_flight_window=20.0
        ) as runner:
            kafka_engine.wait_for_instances(ids, "COMPLETED", timeout=TIMEOUT)
            source = runner.source
            assert source is not None
            assert wait_until(lambda: source.stats.in_flight == 0)
            assert wait_until(lambda: source.pending_offsets() == 0)
        stats = runner.stats
    assert stats.reports_lost == 0
    jobs = kafka_engine.jobs(job_type=job_type)
    assert sorted(job["completeCalls"] for job in jobs) == [1, 1, 1]
    assert sorted(job["failCalls"] for job in jobs) == [0, 0, 1]
    assert kafka_engine.counters["overlapping_completes"] == 0


def test_handlers_get_the_documented_cancel_event_set_at_stop(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    """Pins: the KafkaRunner passed no ``cancelEvent``, which the README
    documents for every handler: a handler written as documented raised
    KeyError on every attempt. Now it is there, unset while the job runs, set
    by the stop; the completion that follows is still sent."""
    job_type = f"cancel-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type))
    seen: list[bool] = []
    started = threading.Event()

    def documented(job: dict[str, Any]) -> dict[str, Any]:
        seen.append(job["cancelEvent"].is_set())
        started.set()
        # Stops early when asked to, as the README shows.
        return {"stopped_early": job["cancelEvent"].wait(TIMEOUT)}

    instance = client.start_instance(f"wf-{unique}")
    with running(kafka_bootstrap, client, job_type, documented) as runner:
        assert started.wait(TIMEOUT)
        runner.stop()
    done = kafka_engine.wait_for_instance(instance["id"], timeout=TIMEOUT)
    assert seen == [False]
    assert done["variables"]["stopped_early"] is True
    assert runner.stats.completed == 1


def test_a_failure_after_the_stop_asked_the_handler_to_end_is_not_sent(
    kafka_engine: LocalEngine, client: RestEngineClient, kafka_bootstrap: str, unique: str
) -> None:
    """A handler that fails because the stop set its cancel event: no fail
    (it would burn a retry or fail the instance); the record stays
    uncommitted and the next member of the group runs the job again."""
    job_type = f"cancelfail-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=0))
    started = threading.Event()

    def gives_up(job: dict[str, Any]) -> None:
        started.set()
        assert job["cancelEvent"].wait(TIMEOUT)
        raise RuntimeError("interrupted by the stop")

    instance = client.start_instance(f"wf-{unique}")
    with running(kafka_bootstrap, client, job_type, gives_up) as runner:
        assert started.wait(TIMEOUT)
        runner.stop()
    assert runner.stats.fails_withheld == 1
    assert runner.stats.failed == 0
    [job] = kafka_engine.jobs(job_type=job_type)
    assert job["failCalls"] == 0

    calls: list[str] = []
    with running(kafka_bootstrap, client, job_type, lambda job: calls.append(job["id"])):
        done = kafka_engine.wait_for_instance(instance["id"], timeout=TIMEOUT)
    assert done["status"] == "COMPLETED"
    assert calls == [job["id"]]
