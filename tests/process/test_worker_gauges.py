"""A killed worker's gauges leave the aggregated /metrics (issue 22, item 7)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, read_pid, upload_single_step, wait_for
from .process_support import metrics_url, sample

Start = Callable[..., SupervisorProcess]

GAUGES = """\
import os
import time
from pathlib import Path

from prometheus_client import Gauge

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()
IN_PROGRESS = Gauge("gauges_in_progress", "Jobs running", multiprocess_mode="{mode}")
LAST = Gauge("gauges_last_value", "Default mode: one series per process")


@registry.register("hold")
def hold(job):
    IN_PROGRESS.inc()
    LAST.set(42)
    path = Path(job["variables"]["piddir"]) / (job["instanceId"] + ".pid")
    path.with_suffix(".tmp").write_text(str(os.getpid()))
    path.with_suffix(".tmp").rename(path)
    time.sleep(60)
    IN_PROGRESS.dec()
"""


@pytest.mark.parametrize("mode", ["livesum", "liveall", "sum"])
def test_a_sigkilled_workers_gauges_leave_the_scrape(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    tmp_path: Path,
    mode: str,
) -> None:
    """Pins: a worker SIGKILLed mid-job (OOM, memory or time kill) left its
    handler module's gauges at their last value for ever: its metric files
    were never marked dead, and its replacement, which writes to the same
    slot's files, even started from those values. Now every gauge of the
    dead worker goes, whatever its multiprocess_mode."""
    modules, piddir = tmp_path / "modules", tmp_path / "pids"
    modules.mkdir()
    piddir.mkdir()
    (modules / "gauge_handlers.py").write_text(GAUGES.replace("{mode}", mode))
    upload_single_step(client, "gauge-flow", "hold", retries=0)
    sv = start_supervisor(
        workers=1,
        handlers="gauge_handlers",
        extra=f'[metrics]\nport = 0\ndir = "{tmp_path / "metrics"}"\n',
        PYTHONPATH=str(modules),
    )
    url = metrics_url(sv)
    instance = client.start_instance("gauge-flow", {"piddir": str(piddir)})["id"]
    pid = read_pid(piddir, instance)

    def scrape() -> str:
        return requests.get(url, timeout=5).text

    text = wait_for(lambda: (t := scrape()) and "gauges_in_progress" in t and t, 20, "gauges")
    assert sample(text, "gauges_in_progress") == 1
    assert sample(text, "gauges_last_value", pid="worker1") == 42
    ready_before = sv.log().count(" ready, pid ")
    (worker,) = [w for w in sv.workers() if w.pid == pid]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    engine.wait_for_instance(instance, "FAILED", timeout=30)
    wait_for(lambda: sv.log().count(" ready, pid ") > ready_before, 30, "the replacement")

    def forgotten() -> str | None:
        text = scrape()
        in_progress = sample(text, "gauges_in_progress", 0.0)
        last = sample(text, "gauges_last_value", 0.0, pid="worker1")
        return text if (in_progress, last) == (0.0, 0.0) else None

    wait_for(forgotten, 20, "the killed worker's gauges to leave the scrape")
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
