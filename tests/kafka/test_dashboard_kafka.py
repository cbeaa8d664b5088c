"""The Grafana dashboard (deploy/grafana/) queries only metrics a real
supervisor exposes in Kafka mode (a real broker, a real LocalEngine
publishing to it): every name, the Kafka ones included, after a success, a
retried failure and a final failure (see tests/process/test_dashboard.py for
the rule on families recorded only on rarer events)."""

from __future__ import annotations

import signal

import pytest
import requests

from ops_kit import check_dashboard_names
from process.conftest import wait_for
from process.process_support import metrics_url, sample
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import StartKafkaSupervisor
from .kafka_support import create_topics, service_flow

pytestmark = pytest.mark.slow

HANDLERS = """
from workflow_sdk import HandlerRegistry, NonRetryableError

registry = HandlerRegistry()


@registry.register("{job_type}")
def work(job):
    action = job["variables"].get("action", "ok")
    if action == "raise_first" and job["retriesRemaining"] > 0:
        raise RuntimeError("first attempt fails")
    if action == "nonretryable":
        raise NonRetryableError("card declined")
    return {{"done": True}}
"""


def test_every_dashboard_query_uses_metrics_of_a_kafka_mode_supervisor(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    start_kafka_supervisor_for: StartKafkaSupervisor,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    job_type = f"dash-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    client.upload_definition(service_flow("dash-flow", job_type, retries=1))
    ok = client.start_instance("dash-flow", {})["id"]
    retried = client.start_instance("dash-flow", {"action": "raise_first"})["id"]
    failed = client.start_instance("dash-flow", {"action": "nonretryable"})["id"]
    sv = start_kafka_supervisor_for(job_type, HANDLERS, "dash")
    url = metrics_url(sv)
    kafka_engine.wait_for_instances([ok, retried], "COMPLETED", timeout=60)
    kafka_engine.wait_for_instances([failed], "FAILED", timeout=60)

    def counted() -> str | None:
        text = requests.get(url, timeout=5).text
        done = sample(text, "workflow_sdk_jobs_completed_total", 0.0, outcome="success")
        failures = sample(text, "workflow_sdk_jobs_completed_total", 0.0, outcome="failure")
        retries = sample(text, "workflow_sdk_retries_total", 0.0, job_type=job_type)
        # The workers' USS and PSS come with the main loop's first full
        # memory read (on its own thread): a round or two after the start.
        sampled = "workflow_supervisor_worker_pss_bytes{" in text
        return text if done == 2 and failures == 2 and retries == 1 and sampled else None

    text = wait_for(counted, 30, "the four handler runs counted, memory read, in /metrics")
    assert sample(text, "workflow_supervisor_kafka_jobs_fetched_total") == 4
    check_dashboard_names(text, kafka=True)
    sv.signal(signal.SIGTERM)
    assert sv.wait(40) == 0
