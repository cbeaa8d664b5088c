"""The supervisor as users run it: a real process, real workers, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, read_pid, start_instances, upload_single_step

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def test_cpu_bound_instances_all_complete_on_every_worker(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "cpu-flow", "cpu", retries=0)
    ids = start_instances(client, "cpu-flow", 40, {"ms": 30})
    sv = start_supervisor(workers=2)
    done = engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    pids = {summary["variables"]["pid"] for summary in done}
    worker_pids = {w.pid for w in sv.wait_for_workers(2)}
    assert pids == worker_pids, "every worker process took part"
    # Exactly one completion per job, and no fail was ever sent.
    jobs = engine.jobs(job_type="cpu")
    assert len(jobs) == 40
    assert all(job["completeCalls"] == 1 and job["failCalls"] == 0 for job in jobs)
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_sigkill_of_a_busy_worker_retries_its_job_and_restores_the_pool(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "kill-flow", "script", retries=1)
    (iid,) = start_instances(
        client, "kill-flow", 1, {"retries": 1, "first": "block", "piddir": str(piddir)}
    )
    sv = start_supervisor(workers=2)
    victim = read_pid(piddir, iid)
    os.kill(victim, signal.SIGKILL)
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    assert summary["variables"]["attempt"] == "later"
    assert summary["variables"]["handledBy"] != victim
    (job,) = engine.jobs(instance_id=iid)
    assert job["failCalls"] == 1 and job["completeCalls"] == 1
    sv.wait_for_log(f"worker pid {victim}")
    log = sv.log()
    assert "killed by SIGKILL" in log
    assert "likely killed by the OOM killer" in log
    assert "last RSS" in log
    workers = sv.wait_for_workers(2)
    assert victim not in {w.pid for w in workers}


def test_hung_handler_is_killed_at_its_timeout_and_retried(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "hang-flow", "script", retries=1)
    (iid,) = start_instances(client, "hang-flow", 1, {"retries": 1, "first": "block"})
    sv = start_supervisor(workers=1, extra='[job_types."script"]\ntimeout = 1\n')
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    assert summary["variables"]["attempt"] == "later"
    assert "timed out after 1 s" in sv.log()
    (job,) = engine.jobs(instance_id=iid)
    assert job["failCalls"] == 1
    sv.wait_for_workers(1)


def test_a_retry_delivered_before_the_answer_to_its_fail_runs_once_that_answer_is_in(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    # The engine applies the fail (the retry is back in the queue) and holds
    # its answer: the idle worker's next poll claims the retry while the
    # fail is still in flight here. It was taken for a re-delivery of the
    # attempt in hand and dropped, and the retry then waited for its 30 s
    # lease to pass (a CI failure of the test above, under load).
    engine.fail_answer_delay = 2.0
    upload_single_step(client, "early-retry", "script", retries=1)
    (iid,) = start_instances(client, "early-retry", 1, {"retries": 1, "first": "raise"})
    sv = start_supervisor(workers=1)
    sv.wait_for_log("its retry came before the answer to its fail")
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=15)
    assert summary["variables"]["attempt"] == "later"
    (job,) = engine.jobs(instance_id=iid)
    assert (job["deliveries"], job["failCalls"], job["completeCalls"]) == (2, 1, 1)
    assert engine.counters["fail_answers_delayed"] == 1
    assert "handed out again by the engine" not in sv.log()
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_handler_import_error_exits_non_zero_with_the_error(
    start_supervisor: Start, tmp_path: Path
) -> None:
    (tmp_path / "broken_handlers.py").write_text("import no_such_module_for_the_test\n")
    sv = start_supervisor(workers=2, handlers="broken_handlers", PYTHONPATH=str(tmp_path))
    assert sv.wait(30) == 3
    log = sv.log()
    assert "No module named 'no_such_module_for_the_test'" in log
    assert "workers cannot start" in log


def test_a_sigterm_reaching_a_worker_that_is_exiting_after_a_failed_boot_prints_no_traceback(
    start_supervisor: Start, tmp_path: Path
) -> None:
    # The supervisor stops the other workers when one cannot boot; a worker
    # that failed too may be inside multiprocessing's exit functions when its
    # SIGTERM lands. Here the module makes that happen every time: it
    # registers an exit function that sends the worker SIGTERM. The fixture's
    # teardown fails on any "Process worker-N:" traceback.
    (tmp_path / "term_at_exit.py").write_text(
        "import os, signal\n"
        "from multiprocessing import util\n"
        "util.Finalize(None, os.kill, args=(os.getpid(), signal.SIGTERM), exitpriority=100)\n"
        "raise RuntimeError('model file missing')\n"
    )
    sv = start_supervisor(workers=1, handlers="term_at_exit", PYTHONPATH=str(tmp_path))
    assert sv.wait(30) == 3
    log = sv.log()
    assert "RuntimeError: model file missing" in log
    assert "Process worker-" not in log, log


def test_sigterm_under_load_reports_every_running_job_and_exits_zero(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "drain-flow", "script", retries=0)
    ids = start_instances(
        client, "drain-flow", 2, {"first": "sleep", "seconds": 1.5, "piddir": str(piddir)}
    )
    sv = start_supervisor(workers=2)
    for iid in ids:
        read_pid(piddir, iid)  # both jobs are running in workers
    started = time.monotonic()
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    assert time.monotonic() - started < 10  # graceful_timeout
    for iid in ids:
        assert engine.instance(iid)["status"] == "COMPLETED"
    assert all(job["failCalls"] == 0 for job in engine.jobs())
    assert sv.workers() == []


def test_second_sigterm_stops_at_once_and_fails_nothing(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "stuck-flow", "script", retries=2)
    (iid,) = start_instances(
        client, "stuck-flow", 1, {"retries": 2, "first": "block", "piddir": str(piddir)}
    )
    sv = start_supervisor(workers=1)
    read_pid(piddir, iid)
    sv.signal(signal.SIGTERM)
    sv.wait_for_log("stopping; waiting up to")
    started = time.monotonic()
    sv.signal(signal.SIGTERM)
    assert sv.wait(10) == 0
    assert time.monotonic() - started < 5  # well under graceful_timeout (10 s)
    (job,) = engine.jobs(instance_id=iid)
    assert job["status"] == "LOCKED", "left to the engine's lease expiry"
    assert job["failCalls"] == 0 and job["retriesRemaining"] == 2
    assert engine.instance(iid)["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("workers", "extra", "expected"),
    [
        (0, "", "supervisor.workers: must be >= 1, got 0"),
        (1, "colour = 'blue'", "supervisor.colour: unknown key"),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(
    start_supervisor: Start, workers: int, extra: str, expected: str
) -> None:
    sv = start_supervisor(workers=workers, extra=extra)
    assert sv.wait(20) == 2
    assert f"{sv.config_path}: {expected}" in sv.log()


def test_unserialisable_result_fails_the_job_without_retries(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "bad-result", "script", retries=3)
    (iid,) = start_instances(client, "bad-result", 1, {"retries": 3, "first": "unserialisable"})
    start_supervisor(workers=1)
    summary = engine.wait_for_instance(iid, "FAILED", timeout=30)
    assert "not JSON-serialisable" in summary["failureReason"]
    (job,) = engine.jobs(instance_id=iid)
    assert job["failCalls"] == 1, "non-retryable: not retried"


def test_engine_restart_mid_run_loses_nothing(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "outage-flow", "cpu", retries=0)
    ids = start_instances(client, "outage-flow", 30, {"ms": 50})
    sv = start_supervisor(workers=2)
    engine.wait_until(lambda: engine.counters.get("jobs_completed", 0) >= 5, timeout=30)
    engine.stop()
    sv.wait_for_log("failed", timeout=20)  # a poll or a report failed meanwhile
    engine.start()
    engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    assert all(job["failCalls"] == 0 for job in engine.jobs())
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


@pytest.mark.lease(1.0)
def test_lease_overrun_is_logged_and_the_loop_stays_idle(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "overrun-flow", "script", retries=0)
    (iid,) = start_instances(client, "overrun-flow", 1, {"first": "sleep", "seconds": 2.5})
    sv = start_supervisor(workers=1, extra="job_timeout = 0\n")
    sv.wait_for_log("past its lease")
    parent = psutil.Process(sv.pid)
    before = parent.cpu_times()
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    after = parent.cpu_times()
    # A loop spinning on the passed lease deadline would burn a whole core.
    assert (after.user + after.system) - (before.user + before.system) < 0.5
    assert summary["variables"]["attempt"] == "first"


def test_python_api_with_a_registry_built_in_code(engine: LocalEngine, tmp_path: Path) -> None:
    script = tmp_path / "embedded.py"
    script.write_text(
        "import sys\n"
        "from workflow_sdk.supervisor import Supervisor, parse_config\n"
        "import sv_handlers\n"
        "if __name__ == '__main__':  # workers re-import this module, as with spawn\n"
        "    config = parse_config({'engine': {'url': sys.argv[1]},\n"
        "                           'supervisor': {'workers': 1, 'poll_interval': 0.1}})\n"
        "    sys.exit(Supervisor(config, registry=sv_handlers.registry).run())\n"
    )
    with RestEngineClient(engine.url) as client:
        upload_single_step(client, "api-flow", "cpu", retries=0)
        ids = start_instances(client, "api-flow", 3, {"ms": 1})
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, str(script), engine.url], env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        engine.wait_for_instances(ids, "COMPLETED", timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class _GarbageHandler(BaseHTTPRequestHandler):
    """A proxy's error page on every route: 200 with HTML."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = b"<html><body>502 upstream hiccup</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_engine_answering_garbage_is_an_error_not_a_crash(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GarbageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = tmp_path / "garbage.toml"
    config.write_text(
        f'[engine]\nurl = "{url}"\n[supervisor]\nhandlers = ["sv_handlers"]\nworkers = 1\n'
        "poll_interval = 0.1\n"
    )
    sv = SupervisorProcess(
        config, tmp_path, dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    )
    try:
        sv.wait_for_log("poll failed")
        assert "unexpected engine answer" in sv.log() or "expected a JSON body" in sv.log()
        assert sv.proc.poll() is None, "still running"
        sv.signal(signal.SIGTERM)
        assert sv.wait(15) == 0
    finally:
        sv.reap()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_preloaded_module_that_fails_to_import_is_reported_by_the_workers(
    start_supervisor: Start, tmp_path: Path
) -> None:
    # Anything but an ImportError raised in the fork server would kill it.
    (tmp_path / "needs_model.py").write_text("raise RuntimeError('model file missing')\n")
    sv = start_supervisor(
        workers=2,
        handlers="needs_model",
        extra="preload_handlers = true\n",
        PYTHONPATH=str(tmp_path),
    )
    assert sv.wait(30) == 3
    log = sv.log()
    assert "RuntimeError: model file missing" in log
    assert "workers cannot start" in log
