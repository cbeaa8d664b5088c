"""Memory limits count what a worker owns (USS), not the pages it shares (issue 18).

With ``preload_handlers = true`` a model loaded in the fork server is shared
copy-on-write: every worker's RSS counts it in full, so limits on RSS
recycled or killed workers for memory they do not own. The limits now count
``WorkerSlot.owned_bytes``: USS from the worker's smaps_rollup (read at most
every ``memory_check_interval``), plus what its RSS grew since.

A real ``Supervisor`` (``unit.fakes.supervisor_rig``) whose memory reads are
stand-ins: ``StandInPs`` for the cheap RSS, ``Reads`` for smaps_rollup
(answered at once, not on the reader's thread).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from unit.fakes import MIB, StandInPs, SupervisorRig, job, make_slot, supervisor_rig
from workflow_sdk.memory import MemoryReadError, ProcessMemory
from workflow_sdk.supervisor.loop import lifecycle
from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.loop.memory_watch import (
    MemoryReader,
    MemoryRules,
    apply_full,
    due_for_full,
    sample_memory,
)
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

#: A worker that maps a 280 MiB preloaded model and owns 20 MiB of its own.
SHARED = ProcessMemory(rss=300 * MIB, pss=120 * MIB, uss=20 * MIB)


class Reads:
    """The full reads' stand-in (a ``MemoryReader``'s ``ask`` and ``take``, and
    its ``read_full``): answers ``memory`` at once, counts the reads."""

    def __init__(self, memory: ProcessMemory) -> None:
        self.memory = memory
        self.calls = 0
        self.answers: list[tuple[int, int, ProcessMemory | None]] = []

    def __call__(self, pid: int) -> ProcessMemory:
        self.calls += 1
        return self.memory

    def ask(self, slot_no: int, pid: int) -> None:
        self.answers.append((slot_no, pid, self(pid)))

    def take(self) -> list[tuple[int, int, ProcessMemory | None]]:
        taken, self.answers = self.answers, []
        return taken


@dataclass
class Rig:
    harness: SupervisorRig
    slot: WorkerSlot
    reads: Reads

    def sample(self, at: float = 0.0) -> None:
        sup = self.harness.sup
        sup.life.sample_memory(time.monotonic() + at, sup.config.supervisor)


@contextmanager
def busy_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, memory: ProcessMemory
) -> Iterator[Rig]:
    monkeypatch.setattr(lifecycle, "process_handle", lambda pid: StandInPs(memory.rss or 0))
    with supervisor_rig(tmp_path, monkeypatch, workers=1, extra=extra) as harness:
        reads = Reads(memory)
        harness.sup.life.reader = reads  # type: ignore[assignment]
        harness.ready_all()
        harness.tick_until(lambda: harness.source.requests, "a poll")
        harness.source.answer([job("j1")])
        slot = harness.sup.pool.slots[1]
        harness.tick_until(lambda: slot.job is not None, "j1 dispatched")
        yield Rig(harness, slot, reads)


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    extra = "max_memory_mb = 80\nmax_memory_hard_mb = 100\n"
    with busy_rig(tmp_path, monkeypatch, extra, SHARED) as rig:
        yield rig


def test_a_worker_sharing_a_preloaded_model_is_not_killed_for_it(shared: Rig) -> None:
    """Pins: a worker whose RSS (300 MiB) is mostly a shared model passed
    max_memory_hard_mb = 100 on RSS and was killed mid-job, its job failed;
    it owns 20 MiB (USS)."""
    shared.sample()
    assert shared.reads.calls == 1
    assert shared.slot.job is not None and not shared.slot.retiring
    assert shared.slot.owned_bytes == 20 * MIB
    assert shared.harness.client.failed == []


def test_nor_recycled_after_its_job_for_it(shared: Rig) -> None:
    """Pins: after the job, its RSS (300 MiB, what the worker sends) passed
    max_memory_mb = 80 and it was replaced after every job."""
    shared.sample()
    shared.harness.worker(1).done("j1", rss=300 * MIB)
    shared.harness.tick_until(lambda: shared.slot.job is None, "j1's result read")
    assert not shared.slot.retiring
    assert shared.slot.exit_reason == ""


def test_what_its_rss_grew_since_the_last_full_read_counts_as_its_own(shared: Rig) -> None:
    """Between two smaps_rollup reads, new memory (RSS growth) is the worker's:
    a job that leaks 100 MiB gets it recycled at once, not a sample later."""
    shared.sample()
    shared.harness.worker(1).done("j1", rss=400 * MIB)
    shared.harness.tick_until(lambda: shared.slot.job is None, "j1's result read")
    assert shared.slot.owned_bytes == 120 * MIB
    assert shared.slot.retiring and shared.slot.exit_reason == "recycle_memory"


def test_a_hard_kill_has_its_own_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: a worker killed mid-job over max_memory_hard_mb was counted as
    reason "recycle_memory", the reason of a replacement between jobs."""
    owned = ProcessMemory(rss=300 * MIB, pss=250 * MIB, uss=200 * MIB)
    with busy_rig(tmp_path, monkeypatch, "max_memory_hard_mb = 100\n", owned) as rig:
        rig.sample()
        assert rig.slot.exit_reason == "memory_kill"
        assert rig.slot.exit_job_type == "a"
        assert rig.harness.client.failed or rig.harness.sup.desk.queued
    assert "uses 200 MiB of its own (USS; RSS 300 MiB), over max_memory_hard_mb = 100" in (
        caplog.text
    )


def test_a_worker_past_the_warning_threshold_is_said_once_without_any_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    owned = ProcessMemory(rss=300 * MIB, pss=250 * MIB, uss=200 * MIB)
    caplog.set_level(logging.WARNING, "workflow_sdk.supervisor")
    with busy_rig(tmp_path, monkeypatch, "memory_warning_mb = 150\n", owned) as rig:
        rig.sample()
        rig.sample(at=5.0)
        rig.harness.worker(1).done("j1", rss=300 * MIB)
        rig.harness.tick_until(lambda: rig.slot.job is None, "j1's result read")
        assert rig.slot.memory_warned and not rig.slot.retiring
    lines = [r.getMessage() for r in caplog.records if "memory_warning_mb" in r.getMessage()]
    assert lines == [
        "worker-1 uses 200 MiB of its own (USS; RSS 300 MiB), over memory_warning_mb = 150; "
        "no memory limit is set (max_memory_mb = 0)"
    ]


# -- without a supervisor ------------------------------------------------------------


def busy(number: int, rss: int) -> WorkerSlot:
    slot = make_slot(number, ps=StandInPs(rss))
    assert slot.start(JobEntry({"id": f"j{number}", "jobType": "a"}, math.inf, 0.0))
    return slot


def test_a_worker_is_read_in_full_at_most_once_per_interval() -> None:
    slot = busy(1, 300 * MIB)
    rules = MemoryRules(hard=100 * MIB, full_every=2.0)
    due = [len(due_for_full([slot], rules, now)) for now in (10.0, 10.5, 11.0, 11.9, 12.0)]
    assert due == [1, 0, 0, 0, 1]
    assert due_for_full([slot], MemoryRules(hard=100 * MIB), 20.0) == [], "no full reads"


def test_until_its_first_full_read_a_worker_s_rss_is_not_judged() -> None:
    """Its RSS counts the shared model: judged on it, a preloaded worker's
    first job would recycle it. A failed read falls back to RSS."""
    slot = busy(1, 300 * MIB)
    rules = MemoryRules(hard=100 * MIB, full_every=2.0)
    assert sample_memory([slot], rules).kill == []
    assert slot.awaiting_full_read() and slot.rss_bytes == 300 * MIB
    reader = MemoryReader(threaded=False)
    reader.ask(1, 0)  # no process: nothing to read, RSS from now on
    apply_full({1: slot}, reader.take())
    assert not slot.awaiting_full_read()
    assert sample_memory([slot], rules).kill == [slot]


def test_the_reader_reads_on_its_thread_once_per_worker_asked() -> None:
    reads = Reads(SHARED)
    reader = MemoryReader(reads)
    try:
        reader.ask(1, 4242)
        reader.ask(1, 4242)  # not answered yet: not asked again
        answers = []
        deadline = time.monotonic() + 5
        while not answers and time.monotonic() < deadline:
            answers = reader.take()
            time.sleep(0.01)
        assert answers == [(1, 4242, SHARED)]
        assert reads.calls == 1
    finally:
        reader.close()


def test_an_answer_for_a_reused_slot_is_not_applied_to_its_new_worker() -> None:
    slot = busy(1, 300 * MIB)  # pid 0
    apply_full({1: slot}, [(1, 999, SHARED)])
    assert slot.uss_bytes is None
    apply_full({1: slot}, [(1, 0, SHARED)])
    assert slot.uss_bytes == 20 * MIB and slot.pss_bytes == 120 * MIB


def test_a_failed_full_read_leaves_the_limits_to_rss() -> None:
    def gone(pid: int) -> ProcessMemory:
        raise MemoryReadError(2, "it has exited", f"/proc/{pid}/smaps_rollup")

    slot = busy(1, 300 * MIB)
    reader = MemoryReader(gone, threaded=False)
    reader.ask(1, 1)  # the slot's pid is 0: an answer for pid 1 is not its own
    apply_full({1: slot}, reader.take())
    assert slot.awaiting_full_read()
    reader.ask(1, 0)
    apply_full({1: slot}, reader.take())
    verdict = sample_memory([slot], MemoryRules(hard=100 * MIB, full_every=2.0))
    assert verdict.kill == [slot]
    assert slot.uss_bytes is None and slot.owned_bytes == 300 * MIB
    assert slot.memory_text() == "uses 300 MiB (RSS)"


def test_without_smaps_rollup_the_limits_count_rss() -> None:
    """Linux before 4.14: no reader, no full reads: RSS is judged at once."""
    slot = busy(1, 300 * MIB)
    assert sample_memory([slot], MemoryRules(hard=100 * MIB)).kill == [slot]


def test_the_warning_verdict_names_a_worker_once() -> None:
    slot = make_slot(1, SlotState.IDLE, ps=StandInPs(300 * MIB))
    rules = MemoryRules(warn=100 * MIB)
    assert sample_memory([slot], rules).warn == [slot]
    slot.warned_memory()
    assert sample_memory([slot], rules).warn == []
