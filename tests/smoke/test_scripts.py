"""Short runs of ``scripts/demo`` and ``benchmarks/bench``: they work end to end.

The scripts are run with this interpreter (``scripts/*.py``, ``benchmarks/*.py``), not through
their bash wrappers, so that the test does not reinstall the project. No
timing is asserted: only that jobs were processed, that the output is whole,
and that no process the script started outlives it.

Leftovers are found with a child subreaper (``PR_SET_CHILD_SUBREAPER``): the
script runs under a small wrapper process that adopts every orphaned
descendant (the scripts start their engine, supervisor and Runner in
sessions of their own, and a supervisor's workers are children of its fork
server), so after the script exits whatever is still alive under the wrapper
was leaked. The wrapper reports and kills them.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
BENCHMARKS = ROOT / "benchmarks"
LEFTOVER_TAG = "LEFTOVER-PROCESSES:"

# Runs argv[1:] as a subreaper; prints the descendants still alive 3 s after
# it ended (on stderr, tagged), kills them, and exits with its status.
_SUBREAPER = f"""
import ctypes, json, os, signal, subprocess, sys, time
import psutil

PR_SET_CHILD_SUBREAPER = 36
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
child = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
code = child.wait()


def alive():
    while True:  # reap adopted zombies
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


deadline = time.monotonic() + 3.0
left = alive()
while left and time.monotonic() < deadline:
    time.sleep(0.1)
    left = alive()
described = []
for p in left:
    try:
        described.append(" ".join(p.cmdline())[:120])
        p.kill()
    except psutil.Error:
        pass
print("{LEFTOVER_TAG}" + json.dumps(described), file=sys.stderr, flush=True)
alive()
sys.exit(code)
"""


def run_script(argv: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a script under the subreaper; on timeout, Ctrl-C it, then kill it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SUBREAPER, sys.executable, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{argv[0]} did not finish in {timeout} s\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def leftovers(result: subprocess.CompletedProcess[str]) -> list[str]:
    for line in result.stderr.splitlines():
        if line.startswith(LEFTOVER_TAG):
            found: list[str] = json.loads(line[len(LEFTOVER_TAG) :])
            return found
    raise AssertionError(f"the subreaper wrapper reported nothing:\n{result.stderr}")


@pytest.mark.timeout(180)
def test_demo_runs_twenty_instances_to_completion(tmp_path: Path) -> None:
    result = run_script(
        [str(SCRIPTS / "demo.py"), "--instances", "20", "--progress", "lines"], 150, tmp_path
    )
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert "instances: 20 completed, 0 failed" in out
    assert "progress: 60/60 jobs" in out
    shares = re.findall(r"pid\s+(\d+):\s+(\d+) jobs", out)
    assert shares and sum(int(jobs) for _, jobs in shares) == 60
    workdir = re.search(r"logs kept in (\S+)", out)
    assert workdir, out
    assert (Path(workdir.group(1)) / "supervisor.log").exists()
    assert leftovers(result) == []


@pytest.mark.timeout(180)
def test_bench_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = run_script(
        [str(BENCHMARKS / "bench.py"), "--smoke", "--output", str(output)], 150, tmp_path
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Goals:" in result.stdout
    report = json.loads(output.read_text())
    assert {"machine", "settings", "results", "goals"} <= set(report)
    assert report["machine"]["cpus"] >= 1
    results = report["results"]
    for section in ("cpu_bound", "noop"):
        for key in ("supervisor", "runner", "ratio_supervisor_runner"):
            assert results[section][key]["median"] > 0, (section, key)
    assert results["cpu_bound"]["supervisor_one_worker"]["median"] > 0
    assert results["cpu_bound"]["ratio_scaling"]["median"] > 0
    latency = results["dispatch_latency_ms"]["poll_answer_to_handler"]
    assert latency["p50"]["median"] is not None and latency["p99"]["median"] is not None
    assert results["parent_cpu_pct"]["idle"]["median"] is not None
    assert results["parent_cpu_ms_per_job"]["cpu_bound"]["median"] > 0
    memory = results["memory_mib"]
    assert memory["supervisor_parent"]["rss_mib"]["median"] > 0
    assert len(memory["workers"]) == report["settings"]["workers"]
    assert results["engine_capacity_cycles_per_s"]["median"] > 0
    slow = results["slow_engine"]
    assert slow["claimed_twice"] == 0
    assert 1 <= slow["held_at_most"] <= slow["held_bound"]
    assert len(report["goals"]) == 7
    assert all(goal["met"] in (True, False) for goal in report["goals"])
    assert leftovers(result) == []


def _ml_unavailable() -> str | None:
    """Why ``benchmarks/bench --ml`` cannot run here (the ml extra missing)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from benchlib.ml_bench import unavailable  # noqa: PLC0415

        return unavailable()
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.timeout(180)
def test_bench_ml_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    """``benchmarks/bench --ml --smoke``: numpy jobs/s with and without the
    thread limits, PSS with and without preload, the job-type change gap;
    every process it started is gone after it."""
    why = _ml_unavailable()
    if why:
        pytest.skip(f"ML bench skipped: {why}")
    output = tmp_path / "bench.json"
    result = run_script(
        [str(BENCHMARKS / "bench.py"), "--ml", "--smoke", "--output", str(output)], 150, tmp_path
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "ML goals:" in result.stdout
    assert not output.exists()  # the dispatch benchmark did not run
    report = json.loads((tmp_path / "bench-ml.json").read_text())
    results = report["results"]
    numpy = results["numpy_jobs_per_s"]
    for key in ("defaults", "oversubscribed", "one_worker_one_thread", "ratio_defaults_scaling"):
        assert numpy[key]["median"] > 0, key
    memory = results["memory_pss_mib"]
    for key in ("one_worker_holding_the_model", "preload_total", "no_preload_total"):
        assert memory[key]["median"] > 0, key
    last = memory["last_run"]
    assert len(last["memory_preload"]["workers"]) == report["settings"]["memory_workers"]
    assert last["memory_preload"]["fork_server"], "the fork server holds the preloaded model"
    gap = results["job_type_change_gap_ms"]
    assert gap["count"] == 2 * report["settings"]["workers"], "two changes per pipeline"
    assert gap["p50"]["median"] is not None
    assert len(report["goals"]) == 2
    assert all(goal["met"] in (True, False) for goal in report["goals"])
    assert leftovers(result) == []


def _kafka_unavailable() -> str | None:
    """Why ``benchmarks/bench --dispatch kafka`` cannot run here (no Java, no extra)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from benchlib.kafka_bench import unavailable  # noqa: PLC0415

        return unavailable()
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.timeout(180)
def test_bench_kafka_smoke_run_compares_both_dispatch_modes(tmp_path: Path) -> None:
    why = _kafka_unavailable()
    if why:
        pytest.skip(f"Kafka bench skipped: {why}")
    output = tmp_path / "bench.json"
    result = run_script(
        [str(BENCHMARKS / "bench.py"), "--dispatch", "kafka", "--smoke", "--output", str(output)],
        150,
        tmp_path,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Goals (issue 13):" in result.stdout
    assert not output.exists()  # the poll-only benchmark did not run
    report = json.loads((tmp_path / "bench-kafka.json").read_text())
    results = report["results"]
    for kind in ("noop", "cpu"):
        for mode in ("poll", "kafka"):
            figures = results[kind][mode]
            assert figures["jobs_per_s"]["median"] > 0, (kind, mode)
            # Measured, but a smoke batch may be too short for a CPU clock tick.
            assert figures["parent_cpu_ms_per_job"]["median"] is not None, (kind, mode)
            assert figures["source_to_handler_ms"]["p50"]["median"] is not None, (kind, mode)
        assert "median" in results[kind]["ratio_jobs_per_s"]
    for mode in ("poll", "kafka"):
        latency = results["open_loop"][mode]["created_to_handler_ms"]
        assert latency["p50"]["median"] > 0 and latency["p99"]["median"] > 0, mode
    assert len(report["goals"]) == 4
    for goal in report["goals"]:
        if goal["met"] is None:
            # Only a CPU ratio may be undecided: a smoke batch can be shorter
            # than one tick of the process CPU clock, so one side reads 0.
            assert "parent CPU" in goal["goal"], goal
            kind = "noop" if "no-op" in goal["goal"] else "cpu"
            cpu = [results[kind][m]["parent_cpu_ms_per_job"]["median"] for m in ("poll", "kafka")]
            assert 0 in cpu, (goal, cpu)
        else:
            assert goal["met"] in (True, False), goal


@pytest.mark.timeout(180)
def test_parent_profile_names_the_threads_and_profiles_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host lists its threads once at start-up (before the poller and the
    # reporters exist) and then not for 8 s, far longer than this run's
    # window: the names must come from a listing written after the window.
    monkeypatch.setenv("BENCH_THREAD_NAMES_EVERY", "8")
    argv = [str(BENCHMARKS / "parent_profile.py"), "--kind", "noop", "--jobs", "200", "--profile"]
    result = run_script(argv, 150, tmp_path)
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert re.search(r"parent CPU per job: \d+ us", out), out
    # The main loop, the poller and the reporters, by name.
    for name in ("MainThread", "poller", "reporters"):
        assert re.search(rf"^  {name}\s+\d+ us/job", out, re.MULTILINE), (name, out)
    assert "arbiter.py" in out and "(tick)" in out, "the main loop's pass, by name"
    assert leftovers(result) == []
