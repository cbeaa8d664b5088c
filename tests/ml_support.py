"""Importing numerical libraries (numpy, scikit-learn, Pillow) in pytest's own process.

numpy's OpenBLAS starts a thread per CPU when it loads (scikit-learn's scipy
another), and a process with threads must not fork (tests/conftest.py fails
any test that does). So these tests import them with every thread limit at 1,
which keeps the pools from starting threads, and check that no thread
appeared. Without the ``ml`` extra the test is skipped and says so.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

from workflow_sdk.threads_limit import thread_env

SKIP_REASON = (
    "needs the ml extra (numpy, scikit-learn, pillow, threadpoolctl, joblib): "
    "pip install -e '.[ml]' (scripts/test installs it)"
)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def native_threads() -> set[int]:
    """This process's threads that Python did not start (a library's pool):
    the threads of earlier tests' fixtures (a LocalEngine's server threads...)
    come and go, and do not count."""
    tasks = {int(tid) for tid in os.listdir("/proc/self/task")}
    return tasks - {t.native_id for t in threading.enumerate() if t.native_id is not None}


@contextmanager
def single_threaded() -> Iterator[None]:
    """One-thread limits in the environment while libraries load; no new
    native thread after."""
    before = native_threads()
    saved = {name: os.environ.get(name) for name in thread_env(1)}
    os.environ.update(thread_env(1))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    started = native_threads() - before
    assert not started, f"loading the libraries started {len(started)} thread(s)"


def import_single_threaded(*names: str) -> list[ModuleType]:
    """Import third-party ``names`` with one-thread limits; skip when one is not installed."""
    with single_threaded():
        return [pytest.importorskip(name, reason=SKIP_REASON) for name in names]


def import_module_single_threaded(name: str) -> ModuleType:
    """Import a module of this repository (its errors are errors, not skips)."""
    with single_threaded():
        return importlib.import_module(name)
