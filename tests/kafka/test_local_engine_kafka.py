"""LocalEngine(dispatch="kafka") publishes dispatches as the real engine does."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.kafka.dispatch import CONTENT_TYPE, decode_dispatch
from workflow_sdk.testing import LocalEngine

from .kafka_support import create_topics, read_records, service_flow


def test_a_job_is_published_with_the_contracts_topic_key_headers_and_fields(
    kafka_engine: LocalEngine, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"pub-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    with kafka_engine.client() as client:
        client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=2))
        instance = client.start_instance(f"wf-{unique}", {"note": "héllo", "n": [1, 2]})
    [record] = read_records(kafka_bootstrap, f"workflow.jobs.{job_type}", 1)
    [engine_job] = kafka_engine.jobs(job_type=job_type)
    headers = dict(record.headers())
    assert record.key() == instance["id"].encode()
    assert headers["content-type"] == CONTENT_TYPE.encode()
    job = decode_dispatch(record.value(), record.headers())
    assert job["dedupId"] and headers["dedup-id"] == job["dedupId"].encode()
    assert job["id"] == engine_job["id"]
    assert job["instanceId"] == instance["id"]
    assert job["stepExecutionId"] == engine_job["stepExecutionId"]
    assert job["jobType"] == job_type
    assert job["retriesRemaining"] == 2
    assert job["variables"] == {"note": "héllo", "n": [1, 2]}
    assert job["createdAt"].endswith("Z")
    assert engine_job["status"] == "PENDING"  # no claim, no lease in this mode


def test_a_retryable_fail_publishes_a_new_dispatch_of_the_same_job(
    kafka_engine: LocalEngine, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"retry-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    topic = f"workflow.jobs.{job_type}"
    with kafka_engine.client() as client:
        client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=1))
        client.start_instance(f"wf-{unique}")
        [first_record] = read_records(kafka_bootstrap, topic, 1)
        first = decode_dispatch(first_record.value(), first_record.headers())
        client.fail_job(first["id"], "w1", "boom", True)
        second_record = read_records(kafka_bootstrap, topic, 2)[1]
    second = decode_dispatch(second_record.value(), second_record.headers())
    assert second["id"] == first["id"]
    assert second["dedupId"] != first["dedupId"]
    assert (first["retriesRemaining"], second["retriesRemaining"]) == (1, 0)
    assert second_record.key() == first_record.key()


def test_polls_get_the_real_engines_410(kafka_engine: LocalEngine) -> None:
    answer = requests.post(
        f"{kafka_engine.url}/v1/jobs/poll",
        json={"workerId": "w", "jobTypes": ["x"], "maxJobs": 1},
        timeout=10,
    )
    assert answer.status_code == 410
    assert answer.json() == {
        "error": "poll path disabled",
        "dispatch_mode": "kafka_outbox",
        "hint": "consume directly from Kafka topic workflow.jobs.<jobType>",
    }


def test_kafka_mode_needs_brokers() -> None:
    with pytest.raises(ValueError, match="brokers"):
        LocalEngine(dispatch="kafka")
    with pytest.raises(ValueError, match="dispatch"):
        LocalEngine(dispatch="carrier-pigeon")


def test_the_rest_client_still_completes_jobs_in_kafka_mode(
    kafka_engine: LocalEngine, kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"done-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    with RestEngineClient(kafka_engine.url) as client:
        client.upload_definition(service_flow(f"wf-{unique}", job_type))
        instance = client.start_instance(f"wf-{unique}")
        [record] = read_records(kafka_bootstrap, f"workflow.jobs.{job_type}", 1)
        client.complete_job(decode_dispatch(record.value(), None)["id"], "w", {"ok": True})
    assert kafka_engine.wait_for_instance(instance["id"])["status"] == "COMPLETED"


def test_the_engine_command_runs_in_kafka_mode(kafka_bootstrap: str) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workflow_sdk.testing",
            "--port",
            "0",
            "--dispatch",
            "kafka",
            "--brokers",
            kafka_bootstrap,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        answer = requests.post(f"{url}/v1/jobs/poll", json={"workerId": "w"}, timeout=10)
        assert answer.status_code == 410
        assert answer.json()["dispatch_mode"] == "kafka_outbox"
    finally:
        process.terminate()
        assert process.wait(30) == 0


@pytest.mark.slow
def test_a_dispatch_published_while_the_broker_is_down_is_published_once_it_is_back(
    unique: str,
) -> None:
    """Found by the chaos suite: the relay gave a dispatch up when the broker
    had not taken it within message.timeout.ms (15 s: a broker restart), so
    the job was never run and its instance stayed ACTIVE. The real engine's
    outbox keeps a dispatch until the broker has it: so does this one now.
    A broker of its own: this test stops it."""
    from .conftest import _wait_for_metadata, kafka_script  # noqa: PLC0415

    broker = kafka_script.start()
    try:
        _wait_for_metadata(broker.bootstrap, timeout=60.0)
        job_type = f"down-{unique}"
        create_topics(broker.bootstrap, [job_type])
        with LocalEngine(dispatch="kafka", brokers=broker.bootstrap) as engine:
            assert engine.publisher is not None
            with engine.client() as client:
                client.upload_definition(service_flow(f"wf-{unique}", job_type, retries=0))
                client.start_instance(f"wf-{unique}")
                assert engine.publisher.wait_published(1, timeout=30)
                broker.kill_process()
                client.start_instance(f"wf-{unique}")
            # Past message.timeout.ms with the broker down: not given up.
            publisher = engine.publisher

            def tried_and_missed() -> int:
                return publisher.failed + getattr(publisher, "retried", 0)

            deadline = time.monotonic() + 60
            while not tried_and_missed() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert publisher.failed == 0, "the dispatch was given up"
            assert publisher.retried >= 1
            broker.relaunch()
            assert engine.publisher.wait_published(2, timeout=60)
            assert engine.publisher.failed == 0
        records = read_records(broker.bootstrap, f"workflow.jobs.{job_type}", 2, timeout=60)
        assert len({decode_dispatch(r.value(), r.headers())["id"] for r in records}) == 2
    finally:
        broker.stop()
