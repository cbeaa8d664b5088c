"""workflow_sdk.threads_limit: the environment for thread limits and the report of
limit_loaded_pools. The limits themselves, in a child process with numpy's OpenBLAS,
are tested in tests/process/test_resource_probes.py."""

from __future__ import annotations

import sys
import types

import pytest

from workflow_sdk.threads_limit import (
    THREAD_ENV_VARS,
    PoolChange,
    PoolLimitResult,
    env_conflicts,
    limit_loaded_pools,
    thread_env,
)


def test_thread_env_names_every_library_and_not_the_core_type() -> None:
    env = thread_env(2)
    assert env == {
        "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "VECLIB_MAXIMUM_THREADS": "2",
        "NUMEXPR_NUM_THREADS": "2",
    }
    assert "OPENBLAS_CORETYPE" not in env
    assert tuple(env) == THREAD_ENV_VARS


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_a_bad_count_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="integer >= 1"):
        thread_env(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer >= 1"):
        limit_loaded_pools(bad)  # type: ignore[arg-type]


def test_env_conflicts_lists_only_different_values() -> None:
    environ = {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "1", "PATH": "/bin"}
    assert env_conflicts(1, environ) == {"OMP_NUM_THREADS": "4"}
    assert env_conflicts(1, {}) == {}


def test_without_threadpoolctl_nothing_is_done_and_it_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    result = limit_loaded_pools(1)
    assert result == PoolLimitResult(1, available=False)
    assert "threadpoolctl is not installed" in result.describe()


def test_a_failing_threadpoolctl_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("threadpoolctl")

    def threadpool_info() -> list[dict[str, object]]:
        raise OSError("dlopen exploded")

    broken.threadpool_info = threadpool_info  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "threadpoolctl", broken)
    result = limit_loaded_pools(1)
    assert result.available and result.error == "OSError: dlopen exploded"
    assert "failed" in result.describe()


def test_describe() -> None:
    assert PoolLimitResult(1, available=True).describe() == "no native thread pool loaded yet"
    result = PoolLimitResult(
        1,
        available=True,
        pools=(
            PoolChange("openblas", "libscipy_openblas", 2, 1),
            PoolChange("openmp", "libgomp", 2, 1),
        ),
    )
    assert result.describe() == (
        "thread pools limited to 1: openblas (libscipy_openblas) 2->1, openmp (libgomp) 2->1"
    )
