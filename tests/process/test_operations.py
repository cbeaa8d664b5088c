"""The supervisor under an operator: metrics, recycling, systemd, reload, scaling."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, start_instances, upload_single_step, wait_for
from .process_support import metrics_url, sample

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def test_metrics_are_aggregated_and_exact_across_recycled_workers(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_stale.db").write_bytes(b"left by an earlier run")
    upload_single_step(client, "recycle-flow", "cpu", retries=0)
    jobs = 60
    ids = start_instances(client, "recycle-flow", jobs, {"ms": 1})
    sv = start_supervisor(
        workers=2,
        extra=(
            "max_jobs_per_child = 3\nmax_jobs_jitter = 0\n"
            f'[metrics]\nport = 0\ndir = "{metrics_dir}"\n'
        ),
    )
    url = metrics_url(sv)
    engine.wait_for_instances(ids, "COMPLETED", timeout=60)

    def scraped_all() -> str | None:
        # Both, in one scrape: the collector reads the counter and histogram
        # files one after the other, and the last job may be counted in
        # between (one seen, the other not yet).
        text = requests.get(url, timeout=5).text
        done = sample(
            text, "workflow_sdk_jobs_completed_total", 0.0, job_type="cpu", outcome="success"
        )
        timed = sample(text, "workflow_sdk_handler_latency_seconds_count", 0.0, job_type="cpu")
        return text if done == jobs and timed == jobs else None

    text = wait_for(scraped_all, 20, "every completion and its handler time in /metrics")
    # The handler module's own counter, summed over every worker ever started.
    assert sample(text, "sv_handled_total", handler="cpu") == jobs
    assert sample(text, "workflow_sdk_poll_latency_seconds_count") >= 1
    assert sample(text, "workflow_supervisor_jobs_claimed_total") == jobs
    assert sample(text, "workflow_supervisor_worker_restarts_total", reason="recycle_jobs") >= 15
    assert sample(text, "workflow_supervisor_workers") >= 2
    assert sample(text, "workflow_supervisor_reports_lost_total") == 0
    assert "workflow_supervisor_kafka_" not in text, "Kafka counters only in Kafka mode"
    rss = re.findall(r'workflow_supervisor_worker_rss_bytes\{slot="\d+"\} (\S+)', text)
    assert rss and all(float(value) > 1e6 for value in rss)
    # ~20 recycles, yet the files stay bounded by the pool size: one set per
    # slot (at most workers + 1 slots) plus the supervisor's own.
    files = [p.name for p in metrics_dir.iterdir()]
    assert "counter_stale.db" not in files, "wiped at start"
    assert len(files) <= 3 * 4 + 4, files
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_memory_limits_recycle_softly_and_kill_hard(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """The limits count what a worker owns (USS); a kill during a job and a
    replacement after one have reasons of their own (issue 18: both were
    "recycle_memory"), and the USS and PSS gauges show each worker."""
    upload_single_step(client, "leak-flow", "script", retries=1)
    sv = start_supervisor(
        workers=1,
        extra=(
            "max_memory_mb = 150\nmax_memory_hard_mb = 300\nmemory_check_interval = 0.1\n"
            "[metrics]\nport = 0\n"
        ),
    )
    url = metrics_url(sv)
    # Soft limit: the job succeeds, then the bloated worker is replaced.
    (soft,) = start_instances(client, "leak-flow", 1, {"retries": 1, "first": "leak", "mb": 160})
    first = engine.wait_for_instance(soft, "COMPLETED", timeout=30)
    sv.wait_for_log("of its own (USS; RSS ")
    sv.wait_for_log("over max_memory_mb = 150; replacing it")
    wait_for(lambda: sv.wait_for_workers(1)[0].pid != first["variables"]["handledBy"], 20, "new")
    # Hard limit: killed during the job, the job failed retryable and retried.
    (hard,) = start_instances(
        client, "leak-flow", 1, {"retries": 1, "first": "grow", "then": "ok", "mb": 500}
    )
    summary = engine.wait_for_instance(hard, "COMPLETED", timeout=60)
    assert summary["variables"]["attempt"] == "later"
    log = sv.log()
    assert "over max_memory_hard_mb = 300" in log
    assert "OOM killer" not in log, "we sent that SIGKILL ourselves"
    (job,) = engine.jobs(instance_id=hard)
    assert job["failCalls"] == 1

    restarts = "workflow_supervisor_worker_restarts_total"

    def scraped() -> str | None:
        # The killed worker's exit is counted once the loop has reaped it; the
        # one worker left has had its first full memory sample.
        text = requests.get(url, timeout=5).text
        killed = sample(text, restarts, 0.0, reason="memory_kill", job_type="script")
        uss = re.findall(r"workflow_supervisor_worker_uss_bytes\{", text)
        return text if killed and len(uss) == 1 else None

    text = wait_for(scraped, 20, "the memory kill counted, one worker left")
    assert sample(text, restarts, reason="memory_kill", job_type="script") == 1
    assert sample(text, restarts, reason="recycle_memory", job_type="") == 1
    assert sample(text, restarts, reason="recycle_memory", job_type="script", default=0.0) == 0
    # The worker left: what it owns <= its share <= everything it maps.
    rss = sample(text, "workflow_supervisor_worker_rss_bytes")
    uss = sample(text, "workflow_supervisor_worker_uss_bytes")
    pss = sample(text, "workflow_supervisor_worker_pss_bytes")
    assert 0 < uss <= pss <= rss * 1.1


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield sock, path
    sock.close()


def collect_until(sock: socket.socket, seen: list[str], wanted: str, timeout: float = 20) -> None:
    def got() -> bool:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return any(wanted in message for message in seen)

    wait_for(got, timeout, f"{wanted!r} on the notify socket (seen: {seen[-5:]})")


def test_systemd_notify_sequence(
    start_supervisor: Start, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    sv = start_supervisor(workers=2, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    seen: list[str] = []
    collect_until(sock, seen, "READY=1")
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=2 workers" in ready
    workers = sv.wait_for_workers(2)
    for worker in workers:
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
        assert b"NOTIFY_SOCKET=" not in environ and b"WATCHDOG_USEC=" not in environ
    seen.clear()
    collect_until(sock, seen, "WATCHDOG=1")
    collect_until(sock, seen, "WATCHDOG=1")  # keeps pinging while healthy
    sv.signal(signal.SIGHUP)
    seen.clear()
    collect_until(sock, seen, "RELOADING=1")
    reloading = next(m for m in seen if "RELOADING=1" in m)
    assert re.search(r"MONOTONIC_USEC=\d+", reloading)
    collect_until(sock, seen, "READY=1")
    assert seen.index(reloading) < max(i for i, m in enumerate(seen) if "READY=1" in m)
    sv.signal(signal.SIGTERM)
    collect_until(sock, seen, "STOPPING=1")
    assert sv.wait(15) == 0


def test_hup_with_a_broken_config_keeps_serving(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "hup-flow", "cpu", retries=0)
    sv = start_supervisor(workers=1)
    before = {w.pid for w in sv.wait_for_workers(1)}
    sv.config_path.write_text(sv.config_path.read_text() + "\n[supervisor.oops\n")
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("configuration not reloaded")
    assert "invalid TOML" in sv.log()
    ids = start_instances(client, "hup-flow", 3, {"ms": 1})
    engine.wait_for_instances(ids, "COMPLETED", timeout=30)
    assert {w.pid for w in sv.workers()} == before, "workers kept"


def test_hup_runs_changed_handler_code_without_losing_jobs(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, tmp_path: Path
) -> None:
    module = tmp_path / "reloadable.py"
    code = (
        "from workflow_sdk import HandlerRegistry\n"
        "registry = HandlerRegistry()\n"
        "VERSION = {v}\n"
        "@registry.register('versioned')\n"
        "def versioned(job):\n"
        "    return {{'version': VERSION}}\n"
    )
    module.write_text(code.format(v=1))
    upload_single_step(client, "ver-flow", "versioned", retries=0)
    sv = start_supervisor(
        workers=2,
        extra="",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(__file__).parent)]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    sv.config_path.write_text(
        sv.config_path.read_text().replace(
            'handlers = ["sv_handlers:registry"]', 'handlers = ["sv_handlers", "reloadable"]'
        )
    )
    sv.wait_for_log("workers ready")  # signal handlers are installed by then
    sv.signal(signal.SIGHUP)  # pick up the reloadable module
    sv.wait_for_log("reload finished")
    (one,) = start_instances(client, "ver-flow", 1, {})
    assert engine.wait_for_instance(one, timeout=30)["variables"]["version"] == 1
    module.write_text(code.format(v=2) + "# changed\n")
    old = {w.pid for w in sv.workers()}
    # Keep jobs flowing through the reload: none may be lost or failed.
    during = start_instances(client, "ver-flow", 20, {})
    sv.signal(signal.SIGHUP)
    wait_for(lambda: sv.log().count("reload finished") >= 2, 30, "second reload")
    (two,) = start_instances(client, "ver-flow", 1, {})
    assert engine.wait_for_instance(two, timeout=30)["variables"]["version"] == 2
    engine.wait_for_instances(during, "COMPLETED", timeout=30)
    assert all(job["failCalls"] == 0 for job in engine.jobs())
    new = {w.pid for w in sv.wait_for_workers(2)}
    assert not old & new, "every worker was replaced"


def test_ttin_and_ttou_resize_the_pool(start_supervisor: Start) -> None:
    sv = start_supervisor(workers=2)
    sv.wait_for_workers(2)
    sv.signal(signal.SIGTTIN)
    sv.wait_for_workers(3)
    sv.signal(signal.SIGTTOU)
    sv.wait_for_workers(2)
    sv.signal(signal.SIGTTOU)
    sv.wait_for_workers(1)
    sv.signal(signal.SIGTTOU)
    sv.wait_for_log("the pool keeps at least one worker")
    assert len(sv.wait_for_workers(1)) == 1
    title = lambda: " ".join(psutil.Process(sv.pid).cmdline())  # noqa: E731
    wait_for(lambda: "workers=1 busy=0" in title(), 10, "the title to follow")


def test_preloaded_handlers_are_imported_once_and_their_metrics_stay_exact(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, tmp_path: Path
) -> None:
    imports = tmp_path / "imports.log"
    (tmp_path / "preloaded.py").write_text(
        "import os\n"
        "from prometheus_client import Counter\n"
        "from workflow_sdk import HandlerRegistry\n"
        f"with open({str(imports)!r}, 'a') as log:\n"
        "    log.write(f'{os.getpid()}\\n')\n"
        "SEEN = Counter('preloaded_seen_total', 'Jobs seen')\n"
        "registry = HandlerRegistry()\n"
        "@registry.register('pre')\n"
        "def pre(job):\n"
        "    SEEN.inc()\n"
        "    return {'pid': os.getpid()}\n"
    )
    metrics_dir = tmp_path / "metrics"
    upload_single_step(client, "pre-flow", "pre", retries=0)
    jobs = 30
    ids = start_instances(client, "pre-flow", jobs, {})
    sv = start_supervisor(
        workers=2,
        handlers="preloaded",
        extra=(
            "preload_handlers = true\nmax_jobs_per_child = 2\nmax_jobs_jitter = 0\n"
            f'[metrics]\nport = 0\ndir = "{metrics_dir}"\n'
        ),
        PYTHONPATH=str(tmp_path),
    )
    url = metrics_url(sv)
    done = engine.wait_for_instances(ids, "COMPLETED", timeout=60)

    def all_counted() -> str | None:
        # The handler counts in the worker; the parent counts a job once the
        # engine has acknowledged its report (a moment after the instance
        # completes).
        text = requests.get(url, timeout=5).text
        seen = sample(text, "preloaded_seen_total", 0.0)
        done = sample(
            text, "workflow_sdk_jobs_completed_total", 0.0, job_type="pre", outcome="success"
        )
        return text if (seen, done) == (jobs, jobs) else None

    text = wait_for(all_counted, 20, "every job counted")
    importers = {int(line) for line in imports.read_text().split()}
    workers = {summary["variables"]["pid"] for summary in done}
    assert len(importers) == 1, "imported once, in the fork server"
    assert not importers & workers
    assert len(workers) > 2, "workers were recycled"
    completed = sample(text, "workflow_sdk_jobs_completed_total", job_type="pre", outcome="success")
    assert completed == jobs
    assert len(list(metrics_dir.glob("*.db"))) <= 3 * 4 + 4
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
