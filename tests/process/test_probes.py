"""/healthz, /readyz, ``status``, ``pause`` and ``resume`` against a real supervisor.

Real supervisor processes on a real LocalEngine, their metrics port asked
over HTTP and through the command line as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import (
    HERE,
    SupervisorProcess,
    read_pid,
    start_instances,
    upload_single_step,
    wait_for,
)

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    return subprocess.run(
        [sys.executable, "-m", "workflow_sdk.supervisor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def get(base: str, path: str) -> tuple[int, str]:
    answer = requests.get(base + path, timeout=10)
    return answer.status_code, answer.text


def status(base: str) -> dict[str, Any]:
    document: dict[str, Any] = requests.get(base + "/status", timeout=10).json()
    return document


def gated_supervisor(start_supervisor: Start, workers: int = 2) -> tuple[SupervisorProcess, str]:
    """A supervisor of the ``sv_gate`` handlers with a fixed metrics port
    (``-c`` finds it in the file); its base URL once it is ready."""
    port = free_port()
    sv = start_supervisor(
        workers=workers, handlers="sv_gate:registry", extra=f"[metrics]\nport = {port}\n"
    )
    sv.wait_for_log("metrics on http://")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(base, "/readyz")[0] == 200, 30, "/readyz 200")
    return sv, base


def test_healthz_stays_up_and_readyz_follows_an_engine_outage(
    engine: LocalEngine, start_supervisor: Start
) -> None:
    """Sequence: running: both 200; the engine stops: /readyz 503 saying the
    job source fails, /healthz still 200 (restarting would not help); the
    engine comes back on the same port: /readyz 200 again."""
    sv, base = gated_supervisor(start_supervisor)
    code, text = get(base, "/healthz")
    assert code == 200 and text.startswith("alive: the main loop ran "), text
    assert get(base, "/readyz") == (200, "ready: 2 of 2 workers ready, the poll source answers\n")
    engine.stop()

    def not_ready() -> str | None:
        code, text = get(base, "/readyz")
        return text if code == 503 else None

    text = wait_for(not_ready, 30, "/readyz 503 with the engine down")
    assert text.startswith("the job source is failing: "), text
    assert get(base, "/healthz")[0] == 200
    engine.start()
    wait_for(lambda: get(base, "/readyz")[0] == 200, 30, "/readyz 200 with the engine back")
    assert sv.proc.poll() is None


def test_status_shows_each_worker_its_job_and_the_source(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    piddir: Path,
    tmp_path: Path,
) -> None:
    upload_single_step(client, "gate-flow", "gate", retries=0)
    (iid,) = start_instances(client, "gate-flow", 1, {"piddir": str(piddir)})
    sv, base = gated_supervisor(start_supervisor)
    busy_pid = read_pid(piddir, iid)
    (job,) = engine.jobs(instance_id=iid)
    pids = {p.pid for p in sv.wait_for_workers(2)}

    def shows_the_job() -> bool:
        workers = status(base)["workers"]
        return any(w["job"] and w["job"]["id"] == job["id"] for w in workers)

    wait_for(shows_the_job, 10, "the running job in /status")
    table = cli("status", "-c", str(sv.config_path), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"supervisor pid {sv.pid} (") and lines[0].endswith("): running")
    busy_row = next(line.split() for line in lines if f" {busy_pid} " in line)
    assert busy_row[2:5] == ["busy", job["id"], "gate"], table.stdout
    (idle_pid,) = pids - {busy_pid}
    idle_row = next(line.split() for line in lines if f" {idle_pid} " in line)
    assert idle_row[2] == "idle"
    assert "jobs held: 1 of 4" in table.stdout
    assert "job source: poll, last answer ok" in table.stdout

    as_json = cli("status", "--url", base, "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert {w["pid"] for w in document["workers"]} == pids
    (busy,) = [w for w in document["workers"] if w["state"] == "busy"]
    assert busy["pid"] == busy_pid and busy["job"]["type"] == "gate"
    assert busy["job"]["running_seconds"] >= 0 and busy["rss_bytes"] > 0
    assert document["paused"] is False and document["ready"]["ok"] is True
    assert document["source"]["kind"] == "poll" and document["source"]["failures"] == 0

    (piddir / f"{iid}.go").touch()
    engine.wait_for_instances([iid], "COMPLETED", timeout=30)
    done = wait_for(
        lambda: (d := status(base))["jobs"]["succeeded"] == 1 and d, 10, "the job counted"
    )
    assert sum(w["jobs_done"] for w in done["workers"]) == 1


def test_pause_lets_running_jobs_finish_takes_no_new_one_and_resume_runs_them(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    piddir: Path,
    tmp_path: Path,
) -> None:
    """Sequence: a job runs; ``pause``: /readyz 503 "paused", the title says
    paused; instances started now wait (no poll, their jobs unclaimed) while
    the running job finishes and is reported; a SIGHUP reload replaces the
    workers and the pause holds; ``resume``: the waiting jobs run."""
    upload_single_step(client, "gate-flow", "gate", retries=0)
    upload_single_step(client, "quick-flow", "quick", retries=0)
    (running,) = start_instances(client, "gate-flow", 1, {"piddir": str(piddir)})
    sv, base = gated_supervisor(start_supervisor)
    read_pid(piddir, running)

    paused = cli("pause", "-c", str(sv.config_path), cwd=tmp_path)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused: no new jobs are taken")

    def settled() -> bool:
        # Paused, and the poll that may have been out when the pause came is answered.
        document = status(base)
        source = document["source"]
        return bool(document["paused"] and source["request_out_seconds"] is None)

    wait_for(settled, 10, "paused with no poll out")
    assert get(base, "/readyz") == (
        503,
        "paused: no new jobs are taken (rochallor-supervisor resume)\n",
    )
    assert get(base, "/healthz")[0] == 200
    assert " paused" in " ".join(psutil.Process(sv.pid).cmdline())
    polls = engine.counters["polls"]
    waiting = start_instances(client, "quick-flow", 3, {})
    (piddir / f"{running}.go").touch()
    engine.wait_for_instances([running], "COMPLETED", timeout=30)

    sv.signal(signal.SIGHUP)
    sv.wait_for_log("reload finished", timeout=30)
    assert status(base)["paused"] is True, "a reload keeps the pause"
    until = time.monotonic() + 1.0  # ten poll intervals
    while time.monotonic() < until:
        assert engine.counters["polls"] == polls, "no poll while paused"
        assert {j["status"] for j in engine.jobs(job_type="quick")} == {"PENDING"}
        time.sleep(0.05)

    resumed = cli("resume", "--url", base, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "resumed: jobs are taken"
    engine.wait_for_instances(waiting, "COMPLETED", timeout=30)
    wait_for(lambda: get(base, "/readyz")[0] == 200, 10, "/readyz 200 after the resume")
    assert "POST /pause from 127.0.0.1: intake paused" in sv.log()


def test_sigusr2_to_the_whole_group_toggles_the_pause_and_stops_no_process(
    start_supervisor: Start,
) -> None:
    """Sequence: SIGUSR2 to the process group (as ``kill -USR2 -- -PGID``):
    the supervisor pauses; the workers and the fork server ignore it (its
    default action would end them); again: resumed; a scale-up still forks."""
    sv, base = gated_supervisor(start_supervisor)
    workers = sv.wait_for_workers(2)
    os.killpg(sv.pid, signal.SIGUSR2)
    wait_for(lambda: status(base)["paused"], 10, "paused by SIGUSR2")
    os.killpg(sv.pid, signal.SIGUSR2)
    wait_for(lambda: not status(base)["paused"], 10, "resumed by the second SIGUSR2")
    assert all(w.is_running() for w in workers)
    assert {w.pid for w in sv.workers()} == {w.pid for w in workers}
    sv.signal(signal.SIGTTIN)
    sv.wait_for_workers(3)  # the fork server is alive
    wait_for(lambda: get(base, "/readyz")[0] == 200, 10, "/readyz 200")
    assert "SIGUSR2: intake paused" in sv.log() and "SIGUSR2: intake resumed" in sv.log()
