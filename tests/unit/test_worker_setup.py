"""What each worker gets besides its handlers (``loop.worker_setup``), and how
the fork server and the workers apply it (``worker.process_setup``)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from workflow_sdk.supervisor.config import parse_config
from workflow_sdk.supervisor.loop import worker_setup
from workflow_sdk.supervisor.loop.parent_hooks import ParentHooks
from workflow_sdk.supervisor.loop.startup import fork_server_preload
from workflow_sdk.supervisor.worker import process_setup
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES
from workflow_sdk.threads_limit import THREAD_ENV_VARS


def config(env: dict[str, str] | None = None, **supervisor: Any) -> Any:
    table: dict[str, Any] = {"handlers": ["app.handlers:registry"], **supervisor}
    if env is not None:
        table["env"] = env
    return parse_config({"supervisor": table}, environ={})


def test_every_worker_gets_the_thread_variables_then_its_own_env() -> None:
    settings = config({"MODEL_DIR": "/srv/m"}, threads_per_worker=2).supervisor
    env = worker_setup.worker_env(settings)
    assert {name: env[name] for name in THREAD_ENV_VARS} == dict.fromkeys(THREAD_ENV_VARS, "2")
    assert env["MODEL_DIR"] == "/srv/m"
    assert worker_setup.worker_env(config().supervisor)["OPENBLAS_NUM_THREADS"] == "1"


def test_the_configuration_wins_over_the_environment_and_says_so() -> None:
    """The default (1) too: a blanket OMP_NUM_THREADS=8 of a container image
    is the oversubscription the default prevents."""
    settings = config().supervisor
    environ = {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "1", "PATH": "/bin"}
    warning = worker_setup.thread_env_overrides(settings, environ)
    assert warning is not None
    assert warning.startswith("the environment sets OMP_NUM_THREADS=8: the workers get 1 ")
    assert "MKL_NUM_THREADS" not in warning, "the same value is no conflict"
    assert worker_setup.thread_env_overrides(settings, {"OMP_NUM_THREADS": "1"}) is None
    assert worker_setup.start_warnings(settings, environ) == [warning]


def test_pinned_workers_with_more_than_one_thread_are_warned_about() -> None:
    settings = config(cpu_affinity=True, threads_per_worker=2).supervisor
    (warning,) = worker_setup.start_warnings(settings, {})
    assert warning.startswith("cpu_affinity pins each worker to one CPU: its 2 BLAS/OpenMP")
    assert worker_setup.start_warnings(config(cpu_affinity=True).supervisor, {}) == []


def test_worker_n_runs_on_the_nth_usable_cpu_wrapping_around() -> None:
    cpus = [2, 5, 7]
    assert [worker_setup.cpu_for(n, cpus) for n in range(1, 6)] == [2, 5, 7, 2, 5]
    assert worker_setup.cpu_for(1, []) is None


def test_a_worker_spec_carries_the_env_threads_cpu_and_hooks() -> None:
    pinned = config({"A": "b"}, cpu_affinity=True, threads_per_worker=3, hooks="app.hooks")
    spec = worker_setup.worker_spec(pinned, 2, None, scrub_env=("X",), metrics_dir=None)
    cpus = worker_setup.usable_cpu_list()
    assert spec.cpu == cpus[1 % len(cpus)]
    assert (spec.threads, spec.hooks, spec.env["A"]) == (3, "app.hooks", "b")
    assert spec.env["OMP_NUM_THREADS"] == "3"
    plain = worker_setup.worker_spec(config(), 1, None, scrub_env=(), metrics_dir=None)
    assert (plain.cpu, plain.hooks, plain.threads) == (None, "", 1)


def test_the_start_line_says_where_the_worker_count_came_from() -> None:
    chosen = config()
    line = worker_setup.start_line(chosen, chosen.supervisor.workers)
    assert f"(the CPUs this process may use: {chosen.workers_from})" in line
    assert line.endswith(", 1 BLAS/OpenMP thread each")
    fixed = config(workers=3, threads_per_worker=2, cpu_affinity=True)
    assert worker_setup.start_line(fixed, 3) == (
        "3 workers, 2 BLAS/OpenMP threads each, each pinned to one CPU"
    )


def test_the_parent_imports_the_hooks_only_with_parent_hooks() -> None:
    hooks = worker_setup.parent_hooks(config(hooks="no_such_module_anywhere").supervisor)
    assert isinstance(hooks, ParentHooks) and hooks.name == ""


def test_the_fork_server_gets_the_workers_env_and_preloads_the_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_PRELOAD_MODULES, raising=False)
    monkeypatch.delenv(process_setup.ENV_FORK_SERVER, raising=False)
    settings = config({"MODEL_DIR": "/m"}, preload_handlers=True, hooks="app.hooks").supervisor
    fork_server_preload(settings)
    assert os.environ[ENV_PRELOAD_MODULES] == "app.handlers,app.hooks"
    assert json.loads(os.environ[process_setup.ENV_FORK_SERVER]) == worker_setup.worker_env(
        settings
    )
    # This process keeps its own environment.
    assert "MODEL_DIR" not in os.environ


def test_the_fork_server_applies_what_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROCHALLOR_TEST_FS_VAR", raising=False)
    monkeypatch.setenv(
        process_setup.ENV_FORK_SERVER, process_setup.fork_server_env({"ROCHALLOR_TEST_FS_VAR": "1"})
    )
    process_setup.apply_fork_server_env()
    assert os.environ["ROCHALLOR_TEST_FS_VAR"] == "1"
    monkeypatch.setenv(process_setup.ENV_FORK_SERVER, "{not json")
    process_setup.apply_fork_server_env()  # never raises: the fork server must start


def test_pinning_to_no_cpu_does_nothing_and_a_bad_cpu_is_a_problem() -> None:
    before = os.sched_getaffinity(0)
    assert process_setup.pin_to_cpu(None) == ""
    assert process_setup.pin_to_cpu(10_000).startswith("cannot pin to CPU 10000: ")
    assert os.sched_getaffinity(0) == before
