"""examples/ml: the model builds, the handlers run once each, the files agree.

The handlers run in pytest's own process (imported with one-thread limits, so
that no BLAS or OpenMP thread starts here: see tests/ml_support.py), on a
small model that ``python -m examples.ml.build_model`` trains into a
temporary cache. Skipped, with the reason, without the ``ml`` extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ml_support import import_module_single_threaded, import_single_threaded, native_threads
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.handler.outcome import run_handler
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.testing import LocalEngine
from workflow_sdk.threads_limit import THREAD_ENV_VARS

from .conftest import SupervisorProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ml"
SMALL = ["--samples", "2000", "--trees", "5"]


def build_model(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ROCHALLOR_ML_CACHE=str(cache))
    env.pop("ROCHALLOR_ML_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "examples.ml.build_model", *SMALL, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import_single_threaded("numpy", "sklearn", "joblib", "PIL")
    cache = tmp_path_factory.mktemp("ml-cache")
    built = build_model(cache)
    assert built.returncode == 0, built.stderr
    path = Path(built.stdout.strip())
    assert path.parent == cache and path.is_file()
    return path


@pytest.fixture
def handlers(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples.ml.handlers, imported afresh with the small model."""
    monkeypatch.setenv("ROCHALLOR_ML_MODEL", str(model_file))
    monkeypatch.delitem(sys.modules, "examples.ml.handlers", raising=False)
    module = import_module_single_threaded("examples.ml.handlers")
    yield module
    sys.modules.pop("examples.ml.handlers", None)


def run(module: ModuleType, job_type: str, variables: dict[str, Any]) -> dict[str, Any]:
    handler = module.registry.get(job_type)
    assert handler is not None
    context = {"id": f"job-{job_type}", "jobType": job_type, "variables": variables}
    outcome = run_handler(handler, context, plain_variables=True)
    assert outcome.succeeded, outcome.error_message
    # What the supervisor's worker sends: plain JSON.
    json.dumps(outcome.variables, allow_nan=False)
    return outcome.variables


def test_each_handler_runs_once_and_returns_json(handlers: ModuleType) -> None:
    threads_before = native_threads()
    matrix = run(handlers, "ml-matrix", {"seed": 1, "matrixSize": 80})
    assert matrix["matrixRank"] == 80
    assert len(matrix["topSingularValues"]) == 3
    assert matrix["topSingularValues"] == sorted(matrix["topSingularValues"], reverse=True)
    assert matrix["matrixTrace"] > 0

    classify = run(handlers, "ml-classify", {"seed": 1, "batchSize": 50})
    assert sum(classify["classCounts"]) == 50
    assert len(classify["classCounts"]) == 3
    assert 1 / 3 <= classify["meanConfidence"] <= 1

    image = run(handlers, "ml-image", {"seed": 1, "imageSize": 64})
    low, high = image["imageExtrema"]
    assert 0 <= low <= image["imageMean"] <= high <= 255

    assert native_threads() <= threads_before, "a handler started a thread in pytest's process"


def test_the_same_seed_gives_the_same_result(handlers: ModuleType) -> None:
    for job_type in handlers.JOB_TYPES:
        first = run(handlers, job_type, {"seed": 5, "matrixSize": 40, "imageSize": 32})
        second = run(handlers, job_type, {"seed": 5, "matrixSize": 40, "imageSize": 32})
        pid_key = next(k for k in first if k.endswith("WorkerPid"))
        assert first == second
        assert first[pid_key] == os.getpid()


def test_without_the_model_the_import_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_single_threaded("numpy", "sklearn", "joblib", "PIL")
    monkeypatch.setenv("ROCHALLOR_ML_MODEL", str(tmp_path / "missing.joblib"))
    monkeypatch.delitem(sys.modules, "examples.ml.handlers", raising=False)
    with pytest.raises(FileNotFoundError, match=r"python -m examples\.ml\.build_model"):
        import_module_single_threaded("examples.ml.handlers")
    assert "examples.ml.handlers" not in sys.modules


def test_build_model_keeps_an_existing_file(model_file: Path) -> None:
    mtime = model_file.stat().st_mtime_ns
    again = build_model(model_file.parent)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(model_file)
    assert "trained" not in again.stderr
    assert model_file.stat().st_mtime_ns == mtime


def test_build_model_refuses_bad_sizes(tmp_path: Path) -> None:
    bad = build_model(tmp_path, "--trees", "0")
    assert bad.returncode == 2
    assert "must be >= 1" in bad.stderr


def test_the_workflow_and_the_config_name_the_handlers_job_types(handlers: ModuleType) -> None:
    workflow = json.loads((EXAMPLE / "workflow.json").read_text())
    service = [s["jobType"] for s in workflow["steps"] if s["type"] == "SERVICE_TASK"]
    assert tuple(service) == handlers.JOB_TYPES
    assert tuple(handlers.registry.job_types()) == tuple(sorted(handlers.JOB_TYPES))
    config = load_config(str(EXAMPLE / "supervisor.toml"))
    assert tuple(config.supervisor.handlers) == ("examples.ml.handlers:registry",)
    assert config.supervisor.preload_handlers is True
    assert set(config.job_types) <= set(handlers.JOB_TYPES)


def test_the_workflow_uploads_and_starts() -> None:
    """The definition passes the engine's validation (the LocalEngine's copy of it)."""
    definition = json.loads((EXAMPLE / "workflow.json").read_text())
    with LocalEngine() as engine, RestEngineClient(engine.url) as client:
        assert client.upload_definition(definition)["id"] == "ml-pipeline"
        instance = client.start_instance("ml-pipeline", {"seed": 1})
        assert instance["status"] == "ACTIVE"


def test_the_pipeline_runs_under_a_supervisor_with_one_blas_thread_per_worker(
    model_file: Path,
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Callable[..., SupervisorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2 workers, the model preloaded in the fork server, threads_per_worker 1:
    every pipeline completes, and each worker runs on its one thread (its
    OpenBLAS and OpenMP pools started none: measured with the defaults on 2
    CPUs, each worker has 2 and more).

    The supervisor's own environment has no thread variable: the limit comes
    from the configuration alone."""
    import_single_threaded("numpy", "sklearn", "joblib", "PIL")
    client.upload_definition(json.loads((EXAMPLE / "workflow.json").read_text()))
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    sv = start_supervisor(
        workers=2,
        handlers="examples.ml.handlers:registry",
        extra="preload_handlers = true\nthreads_per_worker = 1\nboot_timeout = 60\n",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(ROOT)]),
        ROCHALLOR_ML_MODEL=str(model_file),
    )
    sv.wait_for_log("2 workers, 1 BLAS/OpenMP thread each", timeout=60)
    ids = [client.start_instance("ml-pipeline", {"seed": seed})["id"] for seed in range(6)]
    engine.wait_for_instances(ids, "COMPLETED", timeout=120)
    results = [engine.wait_for_instance(i, "COMPLETED", timeout=5)["variables"] for i in ids]
    workers = {w.pid: w for w in sv.wait_for_workers(2)}
    for variables in results:
        assert variables["matrixRank"] == 600
        assert sum(variables["classCounts"]) == 500
    ran = {v[key] for v in results for key in ("matrixWorkerPid", "classifyWorkerPid")}
    assert ran <= set(workers), "no worker was replaced"
    threads = {pid: worker.num_threads() for pid, worker in workers.items()}
    assert set(threads.values()) == {1}, threads
    # Each worker's own account (threadpoolctl): its pools, loaded in the fork
    # server with the limit in its environment, at 1 already.
    pools = [line for line in sv.log().splitlines() if ": thread pools limited to 1: " in line]
    assert len(pools) == 2, sv.log()
    for line in pools:
        sizes = line.split(": thread pools limited to 1: ", 1)[1].split(", ")
        assert any(size.startswith("openblas (") for size in sizes), line
        assert all(size.endswith(" 1->1") for size in sizes), line
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
