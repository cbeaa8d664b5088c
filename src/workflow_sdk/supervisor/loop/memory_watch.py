"""The workers' memory: what the parent reads of it, and the verdicts on it.

Two reads of different cost:

- RSS (``psutil``'s ``memory_info``, one read of ``statm``: microseconds),
  every round (``RSS_SAMPLE_INTERVAL``, at most ``memory_check_interval``),
  on the main loop; and the worker's own RSS after each job.
- The full read (``memory.read_memory``: ``/proc/PID/smaps_rollup``, RSS,
  PSS and USS), which costs the kernel a walk of the worker's page tables:
  measured 30-40 ms per GiB the worker maps, so a worker sharing a 4 GiB
  model costs about 150 ms a read. It runs on a thread of its own
  (``MemoryReader``; the read releases the GIL, the main loop never waits
  for it), at most once per ``memory_check_interval`` per worker
  (``due_for_full``), and only when something uses it: a memory rule, or
  the /metrics gauges.

The verdicts (``sample_memory``) judge what a worker owns
(``WorkerSlot.owned_bytes``: the USS of its last full read plus what its
RSS grew since; its RSS where full reads are not made; no verdict on a
worker whose first full read is still on its way) against the rules: a
worker running a job past the hard limit is killed, one past the warning
threshold is logged once, an idle one is checked against the recycle rules.
Nothing here signals a process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

import psutil

from workflow_sdk.memory import MemoryReadError, ProcessMemory, read_memory
from workflow_sdk.supervisor.config import SupervisorSection
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds between RSS samples of busy workers.
RSS_SAMPLE_INTERVAL = 1.0
#: Reads one worker's smaps_rollup.
FullReader = Callable[[int], ProcessMemory]


@dataclass(frozen=True)
class MemoryRules:
    """What one round of memory samples judges, in bytes (0 = no such rule)."""

    #: kill a worker running a job past this (``max_memory_hard_mb``)
    hard: float = 0.0
    #: job type -> its own hard limit (``[job_types."x"] max_memory_hard_mb``)
    hard_by_type: Mapping[str, float] = field(default_factory=dict)
    #: log once per worker past this (``memory_warning_mb``)
    warn: float = 0.0
    #: seconds between two full reads of one worker (0: none)
    full_every: float = 0.0


def memory_rules(
    settings: SupervisorSection,
    *,
    full_reads: bool,
    hard_by_type: Mapping[str, float] | None = None,
) -> MemoryRules:
    """The rules of ``settings`` (and the job types' own hard limits, in
    bytes). Full reads only where they can be made (``full_reads``) and
    something uses them: a memory rule, or the gauges."""
    return MemoryRules(
        hard=settings.memory_hard_limit_mb * 2**20,
        hard_by_type=dict(hard_by_type or {}),
        warn=settings.memory_warning_mb * 2**20,
        full_every=settings.memory_check_interval if full_reads else 0.0,
    )


def uses_full_reads(settings: SupervisorSection, *, gauges: bool) -> bool:
    """A memory rule is set, or /metrics shows the USS and PSS gauges."""
    return gauges or bool(
        settings.max_memory_mb or settings.max_memory_hard_mb or settings.memory_warning_mb
    )


@dataclass(frozen=True)
class MemoryVerdict:
    """What one round of memory samples asks of the arbiter."""

    #: workers running a job over the hard limit: kill, fail the job
    kill: list[WorkerSlot]
    #: idle workers with a fresh sample: check whether to recycle them
    idle: list[WorkerSlot]
    #: workers past the warning threshold for the first time: log it
    warn: list[WorkerSlot] = field(default_factory=list)


def due_for_full(slots: Iterable[WorkerSlot], rules: MemoryRules, now: float) -> list[WorkerSlot]:
    """The workers whose full read is due (each is then not due again for
    ``rules.full_every``)."""
    if not rules.full_every:
        return []
    due = []
    for slot in slots:
        if slot.state is not SlotState.STOPPING and now >= slot.next_full_sample:
            slot.full_sample_asked(now + rules.full_every)
            due.append(slot)
    return due


def _sample_rss(slot: WorkerSlot) -> bool:
    """Read ``slot``'s RSS; False when it could not be read (keep the last sample)."""
    if slot.ps is None:
        return False
    try:
        rss = slot.ps.memory_info().rss
    except (psutil.Error, OSError):
        # Gone; or /proc could not be opened (EMFILE: out of file
        # descriptors): keep the last sample, try again next round.
        return False
    if rss == 0:
        return False  # exited and not yet reaped: keep the last real sample
    slot.sampled(rss)
    return True


def sample_memory(slots: Iterable[WorkerSlot], rules: MemoryRules) -> MemoryVerdict:
    """Read each worker's RSS (recorded in its slot) and judge what it owns
    against the rules, during jobs too."""
    kill: list[WorkerSlot] = []
    idle: list[WorkerSlot] = []
    warn: list[WorkerSlot] = []
    for slot in slots:
        if slot.state is SlotState.STOPPING or not _sample_rss(slot):
            continue
        if rules.full_every and slot.awaiting_full_read():
            # Its first full read is on its way: until then its RSS, the
            # shared pages included, says nothing about what it owns.
            continue
        owned = slot.owned_bytes
        if rules.warn and owned > rules.warn and not slot.memory_warned:
            warn.append(slot)
        hard = rules.hard
        if slot.job is not None:
            hard = rules.hard_by_type.get(slot.job.job_type, hard)
        if hard and slot.job is not None and owned > hard:
            kill.append(slot)
        elif slot.state is SlotState.IDLE:
            idle.append(slot)
    return MemoryVerdict(kill, idle, warn)


#: A full read's answer: (slot number, pid, what was read or None).
Answer = tuple[int, int, "ProcessMemory | None"]


class MemoryReader:
    """Full reads (smaps_rollup) on a thread of its own.

    ``ask`` and ``take`` are the main loop's; the thread only reads and
    queues. A worker asked for and not yet answered is not asked again.
    ``threaded=False`` reads at once in ``ask`` (tests).
    """

    def __init__(self, read_full: FullReader = read_memory, *, threaded: bool = True) -> None:
        self._read = read_full
        self._asked: SimpleQueue[tuple[int, int] | None] = SimpleQueue()
        self._answers: SimpleQueue[Answer] = SimpleQueue()
        self._pending: set[tuple[int, int]] = set()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="memory-reader", daemon=True)
            self._thread.start()

    def ask(self, slot_no: int, pid: int) -> None:
        key = (slot_no, pid)
        if key in self._pending:
            return
        self._pending.add(key)
        if pid <= 0:
            self._answers.put((slot_no, pid, None))  # no process to read
        elif self._thread is None:
            self._answers.put((slot_no, pid, self._read_one(pid)))
        else:
            self._asked.put(key)

    def take(self) -> list[Answer]:
        answers: list[Answer] = []
        while True:
            try:
                answer = self._answers.get_nowait()
            except Empty:
                return answers
            self._pending.discard((answer[0], answer[1]))
            answers.append(answer)

    def close(self) -> None:
        if self._thread is not None:
            self._asked.put(None)
            self._thread.join(timeout=5.0)
            self._thread = None

    def _read_one(self, pid: int) -> ProcessMemory | None:
        try:
            return self._read(pid)
        except MemoryReadError:
            return None  # gone, or no smaps_rollup: its RSS stands
        except Exception:  # never let the thread die: the limits fall back to RSS
            log.debug("reading the memory of pid %d failed", pid, exc_info=True)
            return None

    def _run(self) -> None:
        while True:
            key = self._asked.get()
            if key is None:
                return
            self._answers.put((key[0], key[1], self._read_one(key[1])))


def apply_full(slots: dict[int, WorkerSlot], answers: Iterable[Answer]) -> None:
    """Record each answer in its worker's slot (not in a slot reused by another pid)."""
    for slot_no, pid, memory in answers:
        slot = slots.get(slot_no)
        if slot is None or slot.pid != pid:
            continue
        if memory is None or not memory.rss or memory.uss is None:
            slot.full_read_missed()  # gone, unreadable, or a zombie's empty file
        else:
            slot.sampled_full(memory.rss, memory.pss, memory.uss)


__all__ = [
    "RSS_SAMPLE_INTERVAL",
    "FullReader",
    "MemoryReader",
    "MemoryRules",
    "MemoryVerdict",
    "apply_full",
    "due_for_full",
    "memory_rules",
    "sample_memory",
    "uses_full_reads",
]
