"""The workers' stack dumps, logged by the parent as one record each
(``loop.stack_dumps``), and the worker's side (``process_setup.register_stack_dump``).

- ``judge``: which files are ready: a live worker's once its size held for
  a tick (then emptied), a gone worker's at once (then removed);
- ``StackDumps``: one record per dump, its header naming the worker, its pid
  and the job (the one the stopper stopped, or the one running now for a
  dump sent by hand), the dump as its block; each dump logged once; the
  files of workers gone removed, the directory at the end;
- the worker's faulthandler, registered in this process on a directory,
  writes to its file; once the parent empties it the next dump starts at 0
  (the file is opened for appending); without the directory it dumps to
  stderr, and without a usable stderr the signal is ignored.

No process is forked: slots have stand-in processes, and the real dumps are
this test process's own (``os.kill(os.getpid(), DUMP_SIGNAL)``).
"""

from __future__ import annotations

import faulthandler
import io
import logging
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from unit.fakes import StandInConn, desk_for, intake_with, make_slot, running, stopper_for
from workflow_sdk.supervisor.exposition.logs import (
    BLOCK_INDENT,
    JsonLineFormatter,
    TextLineFormatter,
)
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.stack_dumps import (
    MAX_DUMP_BYTES,
    DumpVerdict,
    StackDumps,
    judge,
    pid_of,
    read_dump,
)
from workflow_sdk.supervisor.worker.process_setup import (
    DUMP_SIGNAL,
    register_stack_dump,
    stack_file,
)

#: Above any pid_max: a stand-in's signals (none are sent here) reach nothing.
PID = 90_000_001
DUMP = 'Current thread 0x00007f (most recent call first):\n  File "h.py", line 3 in stuck\n'


class PidProcess:
    """A stand-in process with a pid of its own (its sentinel is never waited on)."""

    sentinel = -1
    exitcode: int | None = None

    def __init__(self, pid: int) -> None:
        self.pid = pid


def slot_with_pid(number: int, pid: int, state: SlotState = SlotState.IDLE) -> WorkerSlot:
    return WorkerSlot(
        number,
        PidProcess(pid),  # type: ignore[arg-type]
        StandInConn(),  # type: ignore[arg-type]
        60.0,
        state=state,
        job_types=frozenset({"a"}),
    )


def write_dump(directory: Path, pid: int, text: str = DUMP) -> Path:
    path = Path(stack_file(str(directory), pid))
    with path.open("a") as fh:
        fh.write(text)
    return path


@pytest.fixture(autouse=True)
def warnings_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="workflow_sdk.supervisor")


# -- judge -------------------------------------------------------------------------------


def test_a_live_worker_s_dump_is_ready_once_its_size_held_for_a_tick() -> None:
    first = judge({1: 100}, {}, live={1})
    assert first == DumpVerdict(sizes={1: 100}), "seen first: may still be written"
    growing = judge({1: 250}, first.sizes, live={1})
    assert growing == DumpVerdict(sizes={1: 250})
    assert judge({1: 250}, growing.sizes, live={1}) == DumpVerdict(log_and_empty=(1,))


def test_an_empty_file_of_a_live_worker_is_left_alone() -> None:
    assert judge({1: 0}, {1: 0}, live={1}) == DumpVerdict()


def test_the_files_of_workers_gone_are_logged_or_just_removed_at_once() -> None:
    verdict = judge({1: 0, 2: 80, 3: 80}, {}, live={3})
    assert verdict == DumpVerdict(log_and_remove=(2,), remove=(1,), sizes={3: 80})


def test_only_stack_files_name_a_pid() -> None:
    assert pid_of("stacks-914.txt") == 914
    assert pid_of("stacks-.txt") is None
    assert pid_of("stacks-91a.txt") is None
    assert pid_of("notes.txt") is None


def test_a_huge_dump_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (MAX_DUMP_BYTES + 10))
    assert read_dump(str(path)).endswith(f"... (cut at {MAX_DUMP_BYTES} bytes)")


# -- StackDumps --------------------------------------------------------------------------


def test_a_dump_sent_by_hand_is_one_record_naming_the_worker_and_its_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slot = slot_with_pid(1, PID)
    intake, _ = intake_with(slot)
    running(intake, slot, "j1", 10.0)
    dumps = StackDumps(str(tmp_path))
    path = write_dump(tmp_path, PID)
    dumps.check(10.0, [slot])
    assert not caplog.records, "first seen: it may still be written"
    assert dumps.next_check == 10.0 + dumps.interval
    dumps.check(11.0, [slot])
    (record,) = caplog.records
    assert record.getMessage() == f"worker-1 (pid {PID}) stacks on SIGRTMIN+1, running job j1 (a):"
    text = TextLineFormatter().format(record)
    head, *block = text.split("\n")
    assert head.endswith(record.getMessage())
    assert block == [f"{BLOCK_INDENT}{line}" for line in DUMP.rstrip("\n").split("\n")]
    entry = JsonLineFormatter().format(record)
    assert '"job_id": "j1"' in entry and '"worker": "worker-1"' in entry
    assert path.exists() and path.stat().st_size == 0, "emptied, kept for the next dump"
    dumps.check(12.0, [slot])
    dumps.check(13.0, [slot])
    assert len(caplog.records) == 1, "logged once"


def test_a_dump_of_an_idle_worker_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slot = slot_with_pid(2, PID)
    dumps = StackDumps(str(tmp_path))
    write_dump(tmp_path, PID)
    dumps.check(0.0, [slot])
    dumps.check(1.0, [slot])
    (record,) = caplog.records
    assert record.getMessage() == f"worker-2 (pid {PID}) stacks on SIGRTMIN+1, idle:"


def test_the_dump_at_a_time_limit_names_the_job_stopped_when_its_worker_is_reaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stopper says why it sent the signal; by the worker's exit its slot
    no longer holds the job, and the record still names it."""
    slot = make_slot(1, SlotState.IDLE, job_types=frozenset({"a"}))
    intake, _ = intake_with(slot)
    desk, _ = desk_for(intake)
    stopper = stopper_for(intake, desk)
    dumps = stopper.dumps = StackDumps(str(tmp_path))
    entry = running(intake, slot, "j1", 10.0)
    stopper.time_out(slot, entry, 20.0)
    assert slot.job is None
    caplog.clear()
    path = write_dump(tmp_path, slot.pid)
    dumps.reaped(slot)
    (record,) = caplog.records
    assert record.getMessage() == "worker-1 (pid 0) stacks at the time limit of job j1 (a):"
    assert not path.exists(), "a reaped worker's file is removed"
    dumps.check(30.0, [])
    dumps.close()
    assert len(caplog.records) == 1


def test_the_dump_at_the_drain_s_deadline_names_the_job_left_to_its_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slot = make_slot(1, SlotState.IDLE, job_types=frozenset({"a"}))
    intake, _ = intake_with(slot)
    desk, _ = desk_for(intake)
    stopper = stopper_for(intake, desk)
    dumps = stopper.dumps = StackDumps(str(tmp_path))
    stopper.abandon(slot, running(intake, slot, "j1", 10.0), 15.0)
    caplog.clear()
    write_dump(tmp_path, slot.pid)
    dumps.reaped(slot)
    (record,) = caplog.records
    assert record.getMessage() == "worker-1 (pid 0) stacks at shutdown, still running job j1 (a):"


def test_an_asked_dump_logged_while_its_worker_lives_is_not_logged_again_at_its_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker slow to die after its dump: the tick logs the dump (with the
    stopper's header); its exit then finds the file empty."""
    slot = slot_with_pid(1, PID, SlotState.BUSY)
    intake, _ = intake_with(slot)
    entry = running(intake, slot, "j1", 10.0)
    dumps = StackDumps(str(tmp_path))
    dumps.expect(slot, entry, "at the time limit of")
    path = write_dump(tmp_path, PID)
    dumps.check(20.0, [slot])
    dumps.check(21.0, [slot])
    dumps.reaped(slot)
    (record,) = caplog.records
    assert record.getMessage() == f"worker-1 (pid {PID}) stacks at the time limit of job j1 (a):"
    assert not path.exists()


def test_a_reaped_worker_without_a_dump_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slot = slot_with_pid(1, PID)
    dumps = StackDumps(str(tmp_path))
    path = Path(stack_file(str(tmp_path), PID))
    path.touch()
    dumps.reaped(slot)
    dumps.reaped(slot_with_pid(2, PID + 1))  # no file at all
    assert not caplog.records and not path.exists()


def test_the_end_logs_what_the_last_workers_dumped_and_removes_the_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "stacks"
    directory.mkdir()
    slot = slot_with_pid(3, PID)
    dumps = StackDumps(str(directory))
    dumps.check(0.0, [slot])  # seen alive: its number is known
    write_dump(directory, PID)
    dumps.close()
    (record,) = caplog.records
    assert record.getMessage() == f"worker-3 (pid {PID}) stacks on SIGRTMIN+1:"
    assert not directory.exists()


def test_the_directory_is_private_and_removed_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    dumps = StackDumps.create({})
    assert dumps.directory is not None
    assert Path(dumps.directory).parent == tmp_path
    assert stat.S_IMODE(os.stat(dumps.directory).st_mode) == 0o700
    dumps.close()
    assert not os.path.exists(dumps.directory)


def test_under_systemd_the_directory_is_in_the_runtime_directory(tmp_path: Path) -> None:
    """systemd removes ``RuntimeDirectory=`` at stop, even after a SIGKILL."""
    dumps = StackDumps.create({"RUNTIME_DIRECTORY": f"{tmp_path}:/elsewhere"})
    assert dumps.directory is not None
    assert Path(dumps.directory).parent == tmp_path
    assert Path(dumps.directory).name.startswith("stacks-")
    dumps.close()
    assert not os.path.exists(dumps.directory)


def test_without_a_directory_the_workers_dump_to_stderr_and_nothing_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    dumps = StackDumps.create({})
    assert dumps.directory is None and dumps.path(1) is None
    assert "stack dumps" in caplog.records[0].getMessage()
    dumps.check(0.0, [slot_with_pid(1, PID)])
    dumps.reaped(slot_with_pid(1, PID))
    dumps.close()
    assert len(caplog.records) == 1


# -- the worker's side: faulthandler in this process ---------------------------------------


@pytest.fixture
def dump_registered() -> Iterator[None]:
    """Undo ``register_stack_dump`` in this process: the handler, its file."""
    yield
    faulthandler.unregister(DUMP_SIGNAL)
    signal.signal(DUMP_SIGNAL, signal.SIG_DFL)
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.basename(target) == f"stacks-{os.getpid()}.txt":
            os.close(int(fd))


def dumping_function() -> None:
    os.kill(os.getpid(), DUMP_SIGNAL)


@pytest.mark.usefixtures("dump_registered")
def test_the_worker_dumps_to_its_file_and_the_next_dump_starts_at_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: dump, the parent logs and empties the file, dump again: the
    second dump is written at 0 (appending), not after a hole of zeros at
    the first one's offset, and is logged alone."""
    assert register_stack_dump(str(tmp_path)) == ""
    path = Path(stack_file(str(tmp_path), os.getpid()))
    dumping_function()
    first = path.read_text()
    assert "Current thread" in first and "in dumping_function" in first
    slot = slot_with_pid(1, os.getpid())
    dumps = StackDumps(str(tmp_path))
    dumps.check(0.0, [slot])
    dumps.check(1.0, [slot])
    assert path.stat().st_size == 0
    dumping_function()
    second = path.read_bytes()
    # The dump lists every thread of this process (other tests may have left
    # some running: theirs come first): it starts at 0 with no hole.
    assert second.startswith((b"Current thread", b"Thread 0x")), second[:40]
    assert b"\0" not in second and b"in dumping_function" in second
    dumps.check(2.0, [slot])
    dumps.check(3.0, [slot])
    assert len(caplog.records) == 2
    assert caplog.records[1].__dict__["details"].count("Current thread") == 1


@pytest.mark.usefixtures("dump_registered")
def test_without_its_file_the_worker_dumps_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = (tmp_path / "stderr").open("w")
    monkeypatch.setattr(sys, "stderr", err)
    problem = register_stack_dump(str(tmp_path / "gone"))
    assert problem.startswith("stack dumps on SIGRTMIN+1 go to stderr: "), problem
    dumping_function()
    err.close()
    assert "in dumping_function" in (tmp_path / "stderr").read_text()


@pytest.mark.usefixtures("dump_registered")
def test_without_a_file_or_a_usable_stderr_the_signal_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    problem = register_stack_dump(str(tmp_path / "gone"))
    assert problem.startswith("no stack dump on SIGRTMIN+1: "), problem
    assert signal.getsignal(DUMP_SIGNAL) is signal.SIG_IGN
    dumping_function()  # ignored: this process goes on
