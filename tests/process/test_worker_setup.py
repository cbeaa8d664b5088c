"""What each worker gets besides its handlers, on a real supervisor (issue 18).

- the thread variables of ``threads_per_worker`` and ``[supervisor.env]``
  reach the handlers, over the supervisor's own environment; ``cpu_affinity``
  pins each worker to its own CPU;
- ``workers`` left out under a cgroup v1 CPU quota: one worker, and the
  start-up line says why (skipped where no writable v1 ``cpu`` controller);
- the hooks run where they should: ``worker_init``, ``before_job`` (a failure
  fails the job, naming the hook), ``after_job``, ``worker_exit``, and
  ``child_exit`` in the supervisor with ``parent_hooks``; a failing
  ``worker_init`` is a boot failure (exit status 3);
- a handler stuck past its time limit, or at the drain's deadline, leaves
  its stack in the log (the function it is stuck in), as one record of the
  supervisor naming the worker and the job; so does a dump sent by hand
  (``kill -s RTMIN+1``) to a live worker, which runs on.

Every supervisor is reaped by the ``start_supervisor`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from cgroup_support import cgroups, set_quota
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.supervisor.exposition.logs import BLOCK_INDENT
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL
from workflow_sdk.testing import LocalEngine
from workflow_sdk.threads_limit import THREAD_ENV_VARS

from .conftest import SupervisorProcess, read_pid, upload_single_step, wait_for

Start = Callable[..., SupervisorProcess]

HANDLERS = """
import os
import time
from pathlib import Path

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()
NAMES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "MODEL_DIR")


@registry.register("env")
def env(job):
    return {"env": {n: os.environ.get(n) for n in NAMES}, "pid": os.getpid(),
            "cpus": sorted(os.sched_getaffinity(0))}


def stuck_in_named_function(piddir, instance_id):
    path = Path(piddir) / f"{instance_id}.pid"
    path.with_suffix(".tmp").write_text(str(os.getpid()))
    path.with_suffix(".tmp").rename(path)
    time.sleep(60)


@registry.register("stuck")
def stuck(job):
    stuck_in_named_function(job["variables"]["piddir"], job["instanceId"])
"""

HOOKS = """
import json
import os
from pathlib import Path


def _out(name):
    return Path(os.environ["HOOKS_OUT"]) / name


def worker_init(context):
    _out(f"init-{os.getpid()}.json").write_text(json.dumps(
        {"number": context.number, "pid": context.pid, "threads": context.threads,
         "job_types": list(context.job_types), "model_dir": os.environ.get("MODEL_DIR")}))


def before_job(job):
    if job["variables"].get("refuse"):
        raise ConnectionError("database unreachable")


def after_job(job, outcome):
    with _out(f"after-{os.getpid()}.log").open("a") as f:
        f.write(f"{job['instanceId']} {outcome.succeeded}\\n")


def worker_exit():
    _out(f"exit-{os.getpid()}.json").write_text("{}")


def child_exit(info):
    with _out("child_exit.log").open("a") as f:
        f.write(f"{info.number} {info.pid} {info.reason or '-'} {info.how}\\n")
"""

BAD_HOOKS = """
def worker_init(context):
    raise RuntimeError("no model at /srv/models/forest.joblib")
"""


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    path = tmp_path / "modules"
    path.mkdir()
    (path / "setup_handlers.py").write_text(textwrap.dedent(HANDLERS))
    (path / "t_hooks.py").write_text(textwrap.dedent(HOOKS))
    (path / "t_bad_hooks.py").write_text(textwrap.dedent(BAD_HOOKS))
    return path


def completed(engine: LocalEngine, client: RestEngineClient, count: int) -> list[dict[str, Any]]:
    ids = [client.start_instance("env-flow", {})["id"] for _ in range(count)]
    engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    return [engine.wait_for_instance(i, "COMPLETED", timeout=5)["variables"] for i in ids]


def test_threads_env_and_cpus_reach_every_worker(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, modules: Path
) -> None:
    """The file's threads_per_worker wins over the supervisor's own
    OMP_NUM_THREADS=8 (said once at start-up); [supervisor.env] is set; with
    cpu_affinity each worker runs on one CPU of its own."""
    upload_single_step(client, "env-flow", "env", retries=0)
    cpus = sorted(psutil.Process().cpu_affinity() or [])
    sv = start_supervisor(
        workers=2,
        handlers="setup_handlers",
        extra='threads_per_worker = 2\ncpu_affinity = true\n[supervisor.env]\nMODEL_DIR = "/m"\n',
        PYTHONPATH=str(modules),
        OMP_NUM_THREADS="8",
    )
    sv.wait_for_log("2 workers, 2 BLAS/OpenMP threads each, each pinned to one CPU")
    sv.wait_for_log("the environment sets OMP_NUM_THREADS=8: the workers get 2 ")
    for result in completed(engine, client, 4):
        assert result["env"] == {**dict.fromkeys(THREAD_ENV_VARS, "2"), "MODEL_DIR": "/m"}
        assert len(result["cpus"]) == 1
    pinned = [w.cpu_affinity() for w in sv.wait_for_workers(2)]
    assert all(len(p) == 1 for p in pinned), pinned
    if len(cpus) >= 2:
        assert sorted(p[0] for p in pinned) == cpus[:2]
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_workers_default_to_the_cgroup_quota_and_the_start_line_says_so(
    engine: LocalEngine, start_supervisor: Start, modules: Path
) -> None:
    name = f"rochallor-test-{uuid.uuid4().hex[:8]}"
    with cgroups(name) as (cgroup,):
        set_quota(cgroup, 150_000)
        # The shell moves itself into the cgroup, then becomes the supervisor.
        enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        sv = start_supervisor(
            workers=None,
            handlers="setup_handlers",
            wrapper=("sh", "-c", enter, str(cgroup)),
            PYTHONPATH=str(modules),
        )
        sv.wait_for_log(
            "supervisor starting: 1 worker (the CPUs this process may use: "
            "1 CPU (cgroup v1 quota 150000/100000 us)), 1 BLAS/OpenMP thread each"
        )
        assert len(sv.wait_for_workers(1)) == 1
        sv.signal(signal.SIGTERM)
        assert sv.wait(15) == 0
        wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip(), 10, "cgroup empty")


def test_the_hooks_run_in_the_workers_and_child_exit_in_the_supervisor(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    modules: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "hooks-out"
    out.mkdir()
    upload_single_step(client, "env-flow", "env", retries=0)
    sv = start_supervisor(
        workers=1,
        handlers="setup_handlers",
        extra='hooks = "t_hooks"\nparent_hooks = true\n[supervisor.env]\nMODEL_DIR = "/m"\n',
        PYTHONPATH=str(modules),
        HOOKS_OUT=str(out),
    )
    (worker,) = sv.wait_for_workers(1)
    (ok,) = [client.start_instance("env-flow", {})["id"]]
    engine.wait_for_instance(ok, "COMPLETED", timeout=30)
    refused = client.start_instance("env-flow", {"refuse": True})["id"]
    engine.wait_for_instance(refused, "FAILED", timeout=30)
    (job,) = engine.jobs(instance_id=refused)
    assert job["failCalls"] == 1
    sv.wait_for_log(
        "(no retries left: fails the instance): before_job hook (t_hooks) failed: "
        "ConnectionError: database unreachable"
    )
    init = json.loads((out / f"init-{worker.pid}.json").read_text())
    assert init == {
        "number": 1,
        "pid": worker.pid,
        "threads": 1,
        "job_types": ["env", "stuck"],
        "model_dir": "/m",
    }
    assert (out / f"after-{worker.pid}.log").read_text() == f"{ok} True\n", "refused: no handler"
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    assert (out / f"exit-{worker.pid}.json").exists()
    assert (out / "child_exit.log").read_text() == f"1 {worker.pid} shutdown exited with status 0\n"


def test_a_failing_worker_init_is_a_boot_failure_naming_the_hook(
    start_supervisor: Start, modules: Path
) -> None:
    sv = start_supervisor(
        workers=1,
        handlers="setup_handlers",
        extra='hooks = "t_bad_hooks"\n',
        PYTHONPATH=str(modules),
    )
    assert sv.wait(30) == 3
    log = sv.log()
    assert (
        "workers cannot start: worker_init hook (t_bad_hooks) failed: "
        "RuntimeError: no model at /srv/models/forest.joblib"
    ) in log
    assert 'raise RuntimeError("no model at' in log, "its traceback is in the log"


#: The start of a log record in the text format (``2026-12-03 16:28:03,654 WARNING``).
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def dump_blocks(log: str, header: str) -> list[list[str]]:
    """The dumps logged under a header containing ``header``: for each such
    record, the lines of its block (every line after the header that starts
    with the block's indent: the next record, or a line written by anything
    else, ends it)."""
    lines = log.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if header in line and RECORD_START.match(line):
            block = []
            for following in lines[i + 1 :]:
                if not following.startswith(BLOCK_INDENT):
                    break
                block.append(following)
            blocks.append(block)
    return blocks


def assert_one_record(block: list[str]) -> None:
    """The dump is all in its record's block: the stuck frame among its lines,
    no log record's start inside any of them."""
    assert any(
        "setup_handlers.py" in line and "in stuck_in_named_function" in line for line in block
    ), block
    assert any("(most recent call first):" in line for line in block), block
    inside = [line for line in block if RECORD_START.search(line)]
    assert not inside, f"a log record inside the dump: {inside}"


def test_a_handler_past_its_time_limit_leaves_its_stack_in_the_log(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    modules: Path,
    piddir: Path,
) -> None:
    """Pins: the job passes its time limit, the worker dumps its stacks, then
    the parent fails the job and logs it, while (or before) the dump is written.
    The dump was written from C straight to the shared stderr, so the
    parent's "failed on worker-1" record could land inside a stack line (CI);
    now the dump is one record of the parent's, logged when the worker has
    exited, under a header naming the worker, its pid and the job."""
    upload_single_step(client, "stuck-flow", "stuck", retries=0)
    sv = start_supervisor(
        workers=1,
        handlers="setup_handlers",
        extra='[job_types."stuck"]\ntimeout = 1\n',
        PYTHONPATH=str(modules),
    )
    instance = client.start_instance("stuck-flow", {"piddir": str(piddir)})["id"]
    pid = read_pid(piddir, instance)
    engine.wait_for_instance(instance, "FAILED", timeout=30)
    (job,) = engine.jobs(instance_id=instance)
    header = f"worker-1 (pid {pid}) stacks at the time limit of job {job['id']} (stuck):"
    sv.wait_for_log(header)
    (block,) = dump_blocks(sv.log(), header)
    assert_one_record(block)
    log = sv.log()
    assert "timed out after 1 s" in log
    assert "the stacks of its threads are logged when it exits" in log
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    assert sv.log().count("(most recent call first):") == log.count("(most recent call first):")


def test_a_handler_still_running_at_the_drain_s_deadline_leaves_its_stack_in_the_log(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    modules: Path,
    piddir: Path,
) -> None:
    """Pins: the drain's deadline passes with the job running, the worker is
    told to dump and then to go, and the supervisor ends right after its
    exit: the dump is still logged, once, as one record."""
    upload_single_step(client, "stuck-flow", "stuck", retries=0)
    sv = start_supervisor(
        workers=1, handlers="setup_handlers", graceful_timeout=1, PYTHONPATH=str(modules)
    )
    instance = client.start_instance("stuck-flow", {"piddir": str(piddir)})["id"]
    pid = read_pid(piddir, instance)
    (job,) = engine.jobs(instance_id=instance)
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
    log = sv.log()
    assert "still running at shutdown; killing worker-1 (the stacks of its threads are " in log
    header = f"worker-1 (pid {pid}) stacks at shutdown, still running job {job['id']} (stuck):"
    (block,) = dump_blocks(log, header)
    assert_one_record(block)


def test_a_stack_dump_sent_by_hand_to_a_live_worker_is_logged_and_it_runs_on(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    modules: Path,
    piddir: Path,
) -> None:
    """Pins: an operator sends SIGRTMIN+1 to a worker that seems stuck (docs/
    operations.md), twice. Each dump is one record naming the worker and
    its job, logged while the worker lives on (its job still running), and
    the second holds only the second dump (the file is emptied once logged)."""
    upload_single_step(client, "stuck-flow", "stuck", retries=0)
    sv = start_supervisor(
        workers=1, handlers="setup_handlers", graceful_timeout=1, PYTHONPATH=str(modules)
    )
    instance = client.start_instance("stuck-flow", {"piddir": str(piddir)})["id"]
    pid = read_pid(piddir, instance)
    (job,) = engine.jobs(instance_id=instance)
    header = f"worker-1 (pid {pid}) stacks on SIGRTMIN+1, running job {job['id']} (stuck):"
    for count in (1, 2):
        os.kill(pid, DUMP_SIGNAL)
        wait_for(lambda n=count: len(dump_blocks(sv.log(), header)) == n, 20, f"dump {count}")
        blocks = dump_blocks(sv.log(), header)
        assert len(blocks) == count
        assert_one_record(blocks[-1])
        # One dump: the first one was emptied from the file once logged.
        assert sum("Current thread" in line for line in blocks[-1]) == 1, blocks[-1]
    assert psutil.pid_exists(pid) and [w.pid for w in sv.workers()] == [pid]
    assert [j["status"] for j in engine.jobs(instance_id=instance)] == ["LOCKED"], "it runs on"
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
