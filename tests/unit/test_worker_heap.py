"""A worker gives the heap its jobs freed back to the system once it is idle
(``worker.main.Worker._loop``, ``process_setup.release_free_heap``).

glibc keeps freed memory for later allocations; after a burst of large
jobs (numpy temporaries, decoded images) an idle worker would hold tens of
MiB it does not use, counted in its RSS/USS, the memory limits and the
fleet's total. The trim runs once per idle spell: never between two jobs of
a busy stream (its cost would be paid per job) and not again while idle.
"""

from __future__ import annotations

import ctypes.util
import platform
from typing import Any

import pytest

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.supervisor.worker import main as worker_main
from workflow_sdk.supervisor.worker import process_setup
from workflow_sdk.supervisor.worker.main import IDLE_BEFORE_TRIM, Worker, WorkerSpec
from workflow_sdk.supervisor.worker.protocol import JobDone, RunJob


class ScriptedConn:
    """The worker's end of the pipe: ``script`` says, per ``poll``, whether a
    message is waiting; ``recv`` hands out ``jobs`` then ends the loop."""

    def __init__(self, jobs: int, waiting: list[bool]) -> None:
        self.jobs = jobs
        self.waiting = list(waiting)
        self.polls: list[float] = []
        self.sent: list[Any] = []
        self.events: list[str] = []

    def poll(self, timeout: float = 0.0) -> bool:
        self.polls.append(timeout)
        self.events.append("poll")
        return self.waiting.pop(0) if self.waiting else False

    def recv(self) -> RunJob:
        if self.jobs == 0:
            raise EOFError
        self.jobs -= 1
        self.events.append("recv")
        return RunJob({"id": f"j{self.jobs}", "jobType": "t", "variables": {}})

    def send(self, message: Any) -> None:
        self.sent.append(message)


def run_loop(conn: ScriptedConn, monkeypatch: pytest.MonkeyPatch) -> None:
    def trim() -> bool:
        conn.events.append("trim")
        return True

    monkeypatch.setattr(process_setup, "release_free_heap", trim)
    monkeypatch.setattr(worker_main.titles, "set_title", lambda title: None)
    worker = Worker(WorkerSpec(1, (), None, "INFO", "text"), conn)  # type: ignore[arg-type]

    def done(registry: HandlerRegistry, context: dict[str, Any]) -> tuple[Outcome, bool]:
        return Outcome(context["id"], "t", True), True

    monkeypatch.setattr(worker, "_run", done)
    with pytest.raises(EOFError):
        worker._loop(HandlerRegistry())


def test_an_idle_worker_trims_once_after_its_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three jobs back to back (the next one is always waiting), then idle.
    conn = ScriptedConn(3, waiting=[True, True, False])
    run_loop(conn, monkeypatch)
    assert [type(m) for m in conn.sent] == [JobDone] * 3
    assert conn.events == ["recv", "poll", "recv", "poll", "recv", "poll", "trim"]
    assert conn.polls == [IDLE_BEFORE_TRIM] * 3


def test_a_worker_that_ran_nothing_does_not_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = ScriptedConn(0, waiting=[])
    run_loop(conn, monkeypatch)
    assert conn.events == []


def test_each_idle_spell_trims_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # job, idle (trim), job, idle (trim): one trim per spell, none in between.
    conn = ScriptedConn(2, waiting=[False, False])
    run_loop(conn, monkeypatch)
    assert conn.events == ["recv", "poll", "trim", "recv", "poll", "trim"]


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library found")
def test_the_heap_is_given_back_where_the_c_library_is_glibc() -> None:
    expected = platform.libc_ver()[0] == "glibc"
    assert process_setup.release_free_heap() is expected
