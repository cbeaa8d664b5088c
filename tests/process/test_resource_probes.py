"""workflow_sdk.cpus, memory and threads_limit on real processes.

- a child process put in a cgroup v1 with a CPU quota sees that quota (this
  project's machines have a writable v1 ``cpu`` controller as root;
  elsewhere the test is skipped and says why). Every cgroup the test makes is
  removed, whatever happens;
- a forked child sharing a big buffer with its parent: its PSS counts half
  of the shared buffer, its USS almost nothing, its RSS all of it;
- numpy's OpenBLAS (and scikit-learn's OpenMP) in a child process use the
  thread count of ``thread_env(n)``, and ``limit_loaded_pools`` resizes pools
  already loaded (skipped without the ``ml`` extra).

No speed is measured; every process started here is reaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cgroup_support import cgroups, set_quota
from workflow_sdk.threads_limit import THREAD_ENV_VARS, thread_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any thread limit of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_child(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON document."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- CPU quota in a real cgroup ------------------------------------------------------


REPORT_CPUS = """
import json, sys
sys.stdin.readline()  # wait until the test moved us into the cgroup
from workflow_sdk.cpus import usable_cpus
verdict = usable_cpus()
print(json.dumps({"count": verdict.count, "text": verdict.describe(),
                  "where": verdict.quota.directory if verdict.quota else None}))
"""


def usable_cpus_inside(cgroup: Path) -> dict[str, Any]:
    """What ``usable_cpus()`` says in a child process placed in ``cgroup``."""
    child = subprocess.Popen(
        [sys.executable, "-c", REPORT_CPUS],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        (cgroup / "cgroup.procs").write_text(str(child.pid))
        out, err = child.communicate("go\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_quota_on_the_own_cgroup_limits_the_count() -> None:
    name = f"rochallor-test-{uuid.uuid4().hex[:8]}"
    with cgroups(name) as (cgroup,):
        set_quota(cgroup, 150_000)
        seen = usable_cpus_inside(cgroup)
    assert seen["count"] == 1
    assert seen["text"] == "1 CPU (cgroup v1 quota 150000/100000 us)"


def test_a_quota_on_a_parent_cgroup_applies_below_it() -> None:
    name = f"rochallor-test-{uuid.uuid4().hex[:8]}"
    with cgroups(name, f"{name}/inner") as (outer, inner):
        set_quota(outer, 100_000)
        seen = usable_cpus_inside(inner)
    assert seen["count"] == 1
    assert seen["where"] is not None and seen["where"].endswith(name)


def test_a_generous_quota_is_named_but_the_affinity_decides() -> None:
    cpus = len(os.sched_getaffinity(0))
    name = f"rochallor-test-{uuid.uuid4().hex[:8]}"
    with cgroups(name) as (cgroup,):
        set_quota(cgroup, (cpus + 2) * 100_000)
        seen = usable_cpus_inside(cgroup)
    noun = "CPU" if cpus == 1 else "CPUs"
    assert seen["text"] == (
        f"{cpus} {noun} (affinity; cgroup v1 quota {(cpus + 2) * 100_000}/100000 us "
        f"allows {cpus + 2})"
    )


# -- PSS and USS of a forked child -----------------------------------------------------

SHARED_BUFFER = """
import dataclasses, json, os
from workflow_sdk.memory import read_memory
SIZE = 64 << 20
buffer = bytearray(b"\\x5a") * SIZE  # written: resident, then shared by the fork
ready_r, ready_w = os.pipe()
quit_r, quit_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(ready_w, b"x")
    os.read(quit_r, 1)
    os._exit(0)
os.read(ready_r, 1)
try:
    child, parent = read_memory(pid), read_memory()
finally:
    os.write(quit_w, b"x")
    os.waitpid(pid, 0)
print(json.dumps({"size": SIZE, "child": dataclasses.asdict(child),
                  "parent": dataclasses.asdict(parent)}))
"""


def test_a_forked_child_shares_the_buffer_allocated_before_the_fork() -> None:
    if not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("memory test skipped: this kernel has no smaps_rollup (Linux 4.14+)")
    seen = run_child(SHARED_BUFFER)
    size, child, parent = seen["size"], seen["child"], seen["parent"]
    print(f"forked child: {json.dumps(child)}; parent: {json.dumps(parent)}")
    # RSS counts the shared buffer in full, in both processes.
    assert child["rss"] >= size
    assert parent["rss"] >= size
    # PSS counts half of it in each: at least that half, and the rest of the
    # RSS at most in full.
    assert child["pss"] >= 0.45 * size
    assert child["pss"] <= child["rss"] - 0.45 * size
    # USS: the child wrote almost nothing since the fork.
    assert child["uss"] < 0.25 * size
    # The parent's USS lost the buffer too: it is shared now.
    assert parent["uss"] < 0.5 * size


# -- thread pools --------------------------------------------------------------------

POOLS = """
import json, os
import numpy, sklearn.ensemble, threadpoolctl
limit = os.environ.get("LIMIT_LOADED")
result = None
if limit:
    from workflow_sdk.threads_limit import limit_loaded_pools
    result = limit_loaded_pools(int(limit)).describe()
print(json.dumps({"pools": threadpoolctl.threadpool_info(), "result": result}))
"""


def _need_ml() -> None:
    for name in ("numpy", "sklearn", "threadpoolctl"):
        pytest.importorskip(
            name, reason="needs the ml extra: pip install -e '.[ml]' (scripts/test installs it)"
        )


@pytest.mark.parametrize("threads", [1, 2])
def test_the_environment_sizes_the_pools_of_a_new_process(threads: int) -> None:
    _need_ml()
    if threads > len(os.sched_getaffinity(0)):
        pytest.skip(f"needs {threads} CPUs")
    seen = run_child(POOLS, child_env(thread_env(threads)))
    apis = {pool["internal_api"] for pool in seen["pools"]}
    assert "openblas" in apis
    assert {pool["num_threads"] for pool in seen["pools"]} == {threads}, seen["pools"]


def test_limit_loaded_pools_resizes_pools_already_loaded() -> None:
    _need_ml()
    seen = run_child(POOLS, child_env({"LIMIT_LOADED": "1"}))
    assert {pool["num_threads"] for pool in seen["pools"]} == {1}, seen["pools"]
    cpus = len(os.sched_getaffinity(0))
    assert seen["result"].startswith("thread pools limited to 1: ")
    # Before: OpenBLAS's default, a thread per CPU this process may use.
    assert "openblas (" in seen["result"]
    assert f" {cpus}->1" in seen["result"]
