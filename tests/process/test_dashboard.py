"""The Grafana dashboard (deploy/grafana/) queries only metrics a real
supervisor exposes, in poll mode (tests/kafka/test_dashboard_kafka.py: Kafka
mode).

The supervisor runs real jobs first, a success, a retryable failure that is
retried and a final failure, so that the labelled families appear in the
scrape. A few ``workflow_sdk_*`` families are recorded only on rarer events
(a stale job, a report retried or given up, a lease renewal): for those,
and only those (``EVENT_ONLY``), the name the SDK registers is accepted
instead; the test fails if one of them appears or disappears from that list
unannounced, so a typo in a panel never passes as "not happened yet".
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import requests

from ops_kit import check_dashboard_names
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, upload_single_step, wait_for
from .process_support import metrics_url, sample

pytestmark = pytest.mark.slow


def test_every_dashboard_query_uses_metrics_of_a_poll_mode_supervisor(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Callable[..., SupervisorProcess],
) -> None:
    upload_single_step(client, "dash-flow", "script", retries=1)
    ok = client.start_instance("dash-flow", {"retries": 1})["id"]
    retried = client.start_instance("dash-flow", {"retries": 1, "first": "raise"})["id"]
    failed = client.start_instance("dash-flow", {"retries": 1, "first": "nonretryable"})["id"]
    sv = start_supervisor(workers=2, extra="[metrics]\nport = 0\n")
    url = metrics_url(sv)
    engine.wait_for_instances([ok, retried], "COMPLETED", timeout=60)
    engine.wait_for_instances([failed], "FAILED", timeout=60)

    def counted() -> str | None:
        text = requests.get(url, timeout=5).text
        done = sample(text, "workflow_sdk_jobs_completed_total", 0.0, outcome="success")
        failures = sample(text, "workflow_sdk_jobs_completed_total", 0.0, outcome="failure")
        retries = sample(text, "workflow_sdk_retries_total", 0.0, job_type="script")
        # The workers' USS and PSS come with the main loop's first full
        # memory read (on its own thread): a round or two after the start.
        sampled = "workflow_supervisor_worker_pss_bytes{" in text
        return text if done == 2 and failures == 2 and retries == 1 and sampled else None

    text = wait_for(counted, 20, "the four handler runs counted, memory read, in /metrics")
    check_dashboard_names(text, kafka=False)
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
