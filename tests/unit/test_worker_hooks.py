"""The hooks of ``[supervisor] hooks`` (issue 18), and the log line of a job's
last failed attempt.

The worker's side (``worker.hooks.WorkerHooks``) and the parent's
(``loop.parent_hooks.ParentHooks``: ``child_exit``) on modules written to a
temporary directory; the workers' own calls are checked in
tests/process/test_worker_setup.py.
"""

from __future__ import annotations

import logging
import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workflow_sdk.errors import ConfigError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.supervisor.loop.joblog import failure_kind, log_outcome
from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.loop.parent_hooks import HooksImportError, ParentHooks, WorkerExit
from workflow_sdk.supervisor.worker.hooks import WorkerContext, WorkerHooks

HOOKS = """
calls = []

def worker_init(context):
    calls.append(("worker_init", context.number))

def before_job(job):
    if job["variables"].get("refuse"):
        raise ValueError("no connection")
    calls.append(("before_job", job["id"]))

def after_job(job, outcome):
    calls.append(("after_job", job["id"], outcome.succeeded))
    raise RuntimeError("after_job broke")

def worker_exit():
    calls.append(("worker_exit",))
    raise RuntimeError("worker_exit broke")

def child_exit(info):
    calls.append(("child_exit", info.number, info.reason))
    if info.reason == "crash":
        raise RuntimeError("child_exit broke")
"""


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("t_hooks_")]:
        del sys.modules[name]


def write_module(directory: Path, name: str, text: str) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return name


def context(job_id: str = "j1", **variables: Any) -> dict[str, Any]:
    return {"id": job_id, "jobType": "a", "variables": variables}


def test_the_worker_hooks_run_in_order_and_their_errors_are_reported(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = WorkerHooks.load(write_module(module_dir, "t_hooks_all", HOOKS))
    module: Any = sys.modules["t_hooks_all"]
    assert hooks.defined() == ("worker_init", "before_job", "after_job", "worker_exit")
    hooks.worker_exit()  # not initialised: nothing to undo
    hooks.worker_init(WorkerContext(3, 1234, ("a",), 1, None))
    assert hooks.before_job(context()) is None
    hooks.after_job(context(), Outcome("j1", "a", True))
    refused = hooks.before_job(context("j2", refuse=True))
    assert refused is not None and not refused.succeeded and refused.retryable
    assert (
        refused.error_message == "before_job hook (t_hooks_all) failed: ValueError: no connection"
    )
    assert "raise ValueError" in refused.traceback
    hooks.worker_exit()
    hooks.worker_exit()  # once
    assert module.calls == [
        ("worker_init", 3),
        ("before_job", "j1"),
        ("after_job", "j1", True),
        ("worker_exit",),
    ]
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == [
        "after_job hook (t_hooks_all) failed for job j1 (a); its outcome stands",
        "worker_exit hook (t_hooks_all) failed",
    ]


def test_a_module_without_hooks_and_no_module_do_nothing(module_dir: Path) -> None:
    for hooks in (WorkerHooks(), WorkerHooks.load(write_module(module_dir, "t_hooks_none", ""))):
        hooks.worker_init(WorkerContext(1, 1, ("a",), 1, None))
        assert hooks.before_job(context()) is None
        hooks.after_job(context(), Outcome("j1", "a", True))
        hooks.worker_exit()
        assert hooks.defined() == ()


def test_worker_init_raises_what_the_hook_raised(module_dir: Path) -> None:
    name = write_module(
        module_dir, "t_hooks_init", "def worker_init(c):\n    raise OSError('gone')\n"
    )
    hooks = WorkerHooks.load(name)
    with pytest.raises(OSError, match="gone"):
        hooks.worker_init(WorkerContext(1, 1, ("a",), 1, None))
    assert not hooks.initialised


def test_a_sigterm_during_worker_exit_ends_the_hook_not_the_exit(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor sends SIGTERM to a worker slow to exit: raised inside
    worker_exit (WorkerShutdown), it must not escape the worker's exit path
    (multiprocessing would print a traceback for the process)."""
    text = (
        "from workflow_sdk.errors import WorkerShutdown\n\n"
        "def worker_exit():\n    raise WorkerShutdown(15)\n"
    )
    hooks = WorkerHooks.load(write_module(module_dir, "t_hooks_slow_exit", text))
    hooks.worker_init(WorkerContext(1, 1, ("a",), 1, None))
    hooks.worker_exit()
    assert "worker_exit hook (t_hooks_slow_exit) interrupted by SIGTERM" in caplog.text


def test_a_missing_hooks_module_is_one_line(module_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"supervisor\.hooks: no module named 't_hooks_nope'"):
        WorkerHooks.load("t_hooks_nope")
    broken = write_module(module_dir, "t_hooks_broken", "import t_hooks_dependency_missing\n")
    with pytest.raises(ModuleNotFoundError):  # inside the module: its own traceback
        WorkerHooks.load(broken)


def test_child_exit_runs_in_the_parent_and_its_errors_are_logged(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = ParentHooks.load(write_module(module_dir, "t_hooks_parent", HOOKS))
    module: Any = sys.modules["t_hooks_parent"]
    hooks.child_exit(WorkerExit(2, 99, 0, "exited with status 0", "recycle_jobs", ""))
    hooks.child_exit(WorkerExit(3, 98, -9, "killed by SIGKILL", "crash", "a"))
    assert module.calls == [("child_exit", 2, "recycle_jobs"), ("child_exit", 3, "crash")]
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "child_exit hook (t_hooks_parent) failed for worker-3"
    assert record.exc_info is not None


def test_the_parent_says_why_it_cannot_import_the_hooks(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(HooksImportError, match=r"no module named 't_hooks_absent'"):
        ParentHooks.load("t_hooks_absent")
    broken = write_module(module_dir, "t_hooks_raises", "raise RuntimeError('side effect')\n")
    with pytest.raises(HooksImportError, match=r"t_hooks_raises failed to import in the super"):
        ParentHooks.load(broken)
    plain = ParentHooks.load(write_module(module_dir, "t_hooks_no_child_exit", ""))
    plain.child_exit(WorkerExit(1, 1, 0, "", "", ""))
    assert "defines no child_exit" in caplog.text


# -- the log line of a failed attempt ---------------------------------------------------


def entry(**fields: Any) -> JobEntry:
    return JobEntry({"id": "j1", "jobType": "a", "instanceId": "i1", **fields}, math.inf, 0.0)


def test_the_last_attempt_is_logged_as_failing_the_instance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pins: a retryable fail with retriesRemaining 0 (the engine then fails
    the instance) was logged "(retryable)", as if the job would run again."""
    failed = Outcome.failure("j1", "a", "ValueError: boom", retryable=True)
    log_outcome(failed, entry(retriesRemaining=0), 1, 0.0)
    assert "(no retries left: fails the instance): ValueError: boom" in caplog.text
    assert "(retryable)" not in caplog.text


def test_failure_kinds() -> None:
    retryable = Outcome.failure("j1", "a", "x", retryable=True)
    final = Outcome.failure("j1", "a", "x", retryable=False)
    assert failure_kind(retryable, entry(retriesRemaining=2)) == "retryable"
    assert failure_kind(retryable, entry()) == "retryable", "unknown: as before"
    assert failure_kind(final, entry(retriesRemaining=2)) == "not retryable"
    assert failure_kind(retryable, entry(retriesRemaining=0)) == (
        "no retries left: fails the instance"
    )
