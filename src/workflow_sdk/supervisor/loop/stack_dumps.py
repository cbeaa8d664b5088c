"""The workers' stack dumps, each logged by the parent as one record.

On ``DUMP_SIGNAL`` a worker's faulthandler writes every thread's stack, from
C, in many small writes. Written to the stderr the parent and the other
workers log to, the dump's lines mixed with their records (a record could
land in the middle of a stack line), and under journald each of its lines
was a record of its own, naming neither the worker nor the job. So each
worker writes its dumps to a file of its own, ``stacks-<pid>.txt``
(``process_setup.register_stack_dump``, opened for appending), in a private
directory of this supervisor (mode 0700, made at start, removed at the
end), and the parent logs each dump as one WARNING record, the dump as the
record's block, under a header naming the worker, its pid and its job::

    worker-1 (pid 914) stacks at the time limit of job 3f2a... (render-pdf):

When a file is ready (``judge``, a verdict on the directory's files):

- a worker that has exited (reaped: its writes are over): its file is
  logged if not empty, and removed (``reaped``, as soon as the loop reaps
  it; ``check`` and ``close`` for any file left of a worker gone);
- a live worker (a dump sent by hand, ``kill -s RTMIN+1 <pid>``, or one the
  parent asked for whose SIGTERM has not ended the worker yet): on the loop's
  housekeeping tick, a file not empty whose size has not changed since the
  previous tick (a dump takes milliseconds, the ticks are a second apart)
  is logged and emptied; the worker appends, so its next dump starts at 0.

Each dump is logged once. The stopper says why it sent the signal
(``expect``: the time limit, or the drain's deadline, with the job, which
the slot no longer holds by then); a dump nobody asked for is one sent by
hand, shown with the job the worker is running now.

Only the parent's main loop calls this: it alone reads, empties and removes
the files, and holds this state. Nothing here sends a signal (the stopper
does) or starts a process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from workflow_sdk.supervisor.exposition.logs import DETAILS
from workflow_sdk.supervisor.loop.joblog import job_fields
from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.loop.slots import WorkerSlot
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL_NAME, stack_file

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds between two looks at the live workers' dump files.
CHECK_INTERVAL = 1.0
#: The most of one dump put in the log (faulthandler's own limits, 100
#: threads of 100 frames, keep a dump well below it).
MAX_DUMP_BYTES = 1 << 20
_PREFIX = "stacks-"
_SUFFIX = ".txt"


def pid_of(name: str) -> int | None:
    """The worker pid a file of the directory belongs to (None: not a dump file)."""
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    digits = name[len(_PREFIX) : -len(_SUFFIX)]
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class DumpVerdict:
    """What to do with each dump file, at one tick (pids)."""

    #: a live worker's dump, complete (its size held since the last tick):
    #: logged, then emptied
    log_and_empty: tuple[int, ...] = ()
    #: a dump of a worker gone: logged, then removed
    log_and_remove: tuple[int, ...] = ()
    #: the empty file of a worker gone: removed
    remove: tuple[int, ...] = ()
    #: the sizes to compare with at the next tick (live workers' dumps
    #: seen for the first time, or still growing)
    sizes: Mapping[int, int] = field(default_factory=dict)


def judge(files: Mapping[int, int], last: Mapping[int, int], live: Collection[int]) -> DumpVerdict:
    """``files``: pid -> size of each dump file now; ``last``: the sizes
    remembered at the previous tick; ``live``: the pids of the workers in
    the pool (every other pid has exited and was reaped: a worker joins the
    pool before it can create its file, and leaves it once joined)."""
    log_and_empty: list[int] = []
    log_and_remove: list[int] = []
    remove: list[int] = []
    sizes: dict[int, int] = {}
    for pid, size in sorted(files.items()):
        if pid not in live:
            (log_and_remove if size > 0 else remove).append(pid)
        elif size > 0 and last.get(pid) == size:
            log_and_empty.append(pid)
        elif size > 0:
            sizes[pid] = size
    return DumpVerdict(tuple(log_and_empty), tuple(log_and_remove), tuple(remove), sizes)


@dataclass(frozen=True)
class Expected:
    """A dump the parent asked for: which worker, why, and the job it stopped."""

    number: int
    why: str
    entry: JobEntry


def header(number: int | None, pid: int, why: str, entry: JobEntry | None) -> str:
    """``worker-1 (pid 914) stacks at the time limit of job 3f2a (render-pdf):``."""
    who = f"worker-{number}" if number is not None else "a worker"
    job = f" job {entry.job_id} ({entry.job_type})" if entry is not None else ""
    return f"{who} (pid {pid}) stacks {why}{job}:"


def read_dump(path: str) -> str:
    """The dump in ``path`` (at most ``MAX_DUMP_BYTES``). Raises ``OSError``."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_DUMP_BYTES + 1)
    text = data[:MAX_DUMP_BYTES].decode("utf-8", errors="replace")
    if len(data) > MAX_DUMP_BYTES:
        text += f"\n... (cut at {MAX_DUMP_BYTES} bytes)"
    return text


class StackDumps:
    """The dump files' directory, and when each file is logged (see the module doc).

    :param directory: the private directory (None: there is none, and the
        workers dump to stderr; every call is then a no-op).
    """

    def __init__(self, directory: str | None, *, interval: float = CHECK_INTERVAL) -> None:
        self.directory = directory
        self.interval = interval
        #: monotonic time of the next look at the files (the loop checks it)
        self.next_check = 0.0
        #: live workers' dumps seen at the last tick: pid -> size
        self._sizes: dict[int, int] = {}
        #: dumps the stopper asked for, not yet logged: pid -> why
        self._expected: dict[int, Expected] = {}
        #: worker numbers of the pids seen (a file left of a worker gone)
        self._numbers: dict[int, int] = {}

    @classmethod
    def create(cls, environ: Mapping[str, str] | None = None) -> StackDumps:
        """A new private directory (mode 0700): under systemd's
        ``RuntimeDirectory=`` (``$RUNTIME_DIRECTORY``, removed at stop even
        when this process is killed), else under ``TMPDIR``. Without one,
        said once, the workers dump to stderr as the one place left."""
        env = os.environ if environ is None else environ
        runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
        try:
            if runtime:
                return cls(tempfile.mkdtemp(prefix="stacks-", dir=runtime))
            # The pid in the name says whose it is (a killed supervisor
            # leaves it behind: nothing but systemd's RuntimeDirectory
            # removes a directory after a SIGKILL).
            return cls(tempfile.mkdtemp(prefix=f"rochallor-stacks-{os.getpid()}-"))
        except OSError as exc:
            log.warning(
                "cannot create a directory for the workers' stack dumps (%s): they go to "
                "stderr, not as one record each",
                exc,
            )
            return cls(None)

    def path(self, pid: int) -> str | None:
        return stack_file(self.directory, pid) if self.directory is not None else None

    # -- told by the stopper ----------------------------------------------------------

    def expect(self, slot: WorkerSlot, entry: JobEntry, why: str) -> None:
        """The parent has just sent ``slot`` the dump signal because of ``entry``
        (``why``: "at the time limit of")."""
        self._expected[slot.pid] = Expected(slot.number, why, entry)
        self._numbers[slot.pid] = slot.number

    # -- the main loop ------------------------------------------------------------------

    def check(self, now: float, slots: Iterable[WorkerSlot]) -> None:
        """The housekeeping tick: log what is ready (``judge``)."""
        self.next_check = now + self.interval
        if self.directory is None:
            return
        live = {slot.pid: slot for slot in slots}
        for pid, slot in live.items():
            self._numbers[pid] = slot.number
        verdict = judge(self._scan(), self._sizes, live)
        for pid in verdict.log_and_empty:
            self._log(pid, live.get(pid))
            self._empty(pid)
        for pid in verdict.log_and_remove:
            self._log(pid, None)
        for pid in (*verdict.log_and_remove, *verdict.remove):
            self._remove(pid)
        self._sizes = dict(verdict.sizes)

    def reaped(self, slot: WorkerSlot) -> None:
        """``slot``'s process has exited and was joined: its dump, if any, is
        complete: logged now, and its file removed."""
        self._numbers[slot.pid] = slot.number
        path = self.path(slot.pid)
        if path is None or not os.path.exists(path):
            self._forget(slot.pid)
            return
        with contextlib.suppress(OSError):
            if os.path.getsize(path) > 0:
                self._log(slot.pid, None)
        self._remove(slot.pid)

    def close(self) -> None:
        """At the very end, once every worker is reaped: log what is left,
        remove the directory."""
        if self.directory is None:
            return
        self.check(0.0, ())
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the files --------------------------------------------------------------------

    def _scan(self) -> dict[int, int]:
        """pid -> size of each dump file in the directory."""
        files: dict[int, int] = {}
        try:
            entries = list(os.scandir(self.directory or "."))
        except OSError:
            return files
        for item in entries:
            pid = pid_of(item.name)
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                files[pid] = item.stat().st_size
        return files

    def _log(self, pid: int, slot: WorkerSlot | None) -> None:
        """One record: the header, the dump as its block."""
        path = self.path(pid)
        if path is None:
            return
        try:
            dump = read_dump(path)
        except OSError as exc:
            log.warning("cannot read the stack dump of pid %d (%s): %s", pid, path, exc)
            return
        expected = self._expected.pop(pid, None)
        number = slot.number if slot is not None else self._numbers.get(pid)
        entry: JobEntry | None
        if expected is not None:
            number, why, entry = expected.number, expected.why, expected.entry
        else:
            # Nobody here asked for it: sent by hand (or by another process).
            entry = slot.job if slot is not None else None
            why = f"on {DUMP_SIGNAL_NAME}" + (", running" if entry is not None else "")
            if slot is not None and entry is None:
                why += ", idle"
        extra: dict[str, str] = {DETAILS: dump}
        if entry is not None and number is not None:
            extra.update(job_fields(entry, number))
        elif number is not None:
            extra["worker"] = f"worker-{number}"
        log.warning("%s", header(number, pid, why, entry), extra=extra)

    def _empty(self, pid: int) -> None:
        path = self.path(pid)
        with contextlib.suppress(OSError):
            if path is not None:
                os.truncate(path, 0)

    def _remove(self, pid: int) -> None:
        path = self.path(pid)
        with contextlib.suppress(OSError):
            if path is not None:
                os.unlink(path)
        self._forget(pid)

    def _forget(self, pid: int) -> None:
        self._sizes.pop(pid, None)
        self._expected.pop(pid, None)
        self._numbers.pop(pid, None)


__all__ = [
    "CHECK_INTERVAL",
    "MAX_DUMP_BYTES",
    "DumpVerdict",
    "Expected",
    "StackDumps",
    "header",
    "judge",
    "pid_of",
    "read_dump",
]
