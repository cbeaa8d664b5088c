"""Pausing a Kafka-mode supervisor (a real broker, a real LocalEngine publishing
to it): no record is fetched while paused, /status shows the Kafka source,
and the records waiting in Kafka run once it resumes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from process.conftest import wait_for
from process.process_support import metrics_url
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import StartKafkaSupervisor
from .kafka_support import create_topics, service_flow

pytestmark = pytest.mark.slow

HANDLERS = """
from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()


@registry.register("{job_type}")
def work(job):
    return {{"done": True}}
"""


def test_a_paused_kafka_supervisor_fetches_nothing_and_resume_runs_what_waited(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    start_kafka_supervisor_for: StartKafkaSupervisor,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    """Sequence: ready; POST /pause; instances start (their dispatches are
    published to Kafka); for ten poll intervals nothing is fetched and no
    instance completes; /readyz 503 paused; POST /resume: every one completes."""
    job_type = f"pause-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow("pause-flow", job_type))
    sv = start_kafka_supervisor_for(job_type, HANDLERS, "pause")
    base = metrics_url(sv).removesuffix("/metrics")

    def status() -> dict[str, Any]:
        document: dict[str, Any] = requests.get(base + "/status", timeout=10).json()
        return document

    wait_for(lambda: requests.get(base + "/readyz", timeout=10).ok, 60, "/readyz 200")
    answer = requests.post(base + "/pause", timeout=10)
    assert answer.status_code == 200 and answer.text.startswith("paused")
    wait_for(
        lambda: (d := status())["paused"] and d["source"]["request_out_seconds"] is None,
        10,
        "paused with no fetch out",
    )
    fetched = status()["source"]["kafka"]["fetched"]
    ids = [client.start_instance("pause-flow", {})["id"] for _ in range(4)]
    until = time.monotonic() + 1.0  # ten poll intervals
    while time.monotonic() < until:
        document = status()
        assert document["source"]["kafka"]["fetched"] == fetched, "nothing fetched while paused"
        time.sleep(0.05)
    assert not [i for i in ids if kafka_engine.instance(i)["status"] == "COMPLETED"]
    readyz = requests.get(base + "/readyz", timeout=10)
    assert readyz.status_code == 503 and readyz.text.startswith("paused")
    assert status()["source"]["kind"] == "kafka"

    answer = requests.post(base + "/resume", timeout=10)
    assert answer.status_code == 200, answer.text
    kafka_engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    assert status()["source"]["kafka"]["fetched"] >= fetched + len(ids)
