"""Shared stand-ins for the supervisor's unit tests (test files import these,
never each other's helpers).

Two kinds:

- Objects without a fork or a thread, for the loop's objects one at a time:
  slots holding stand-in processes and channels (``make_slot``), a job
  source that records what it is asked (``StandInSource``), a reporter that
  records what it is handed (``RecordingReporter``), an intake, a desk and a
  stopper wired to them.
- What a real ``Supervisor`` is given to be driven one ``tick`` at a time,
  the gunicorn way (``SupervisorRig``): a worker starter whose processes are
  stand-ins with real sentinels and real channels (the test plays the
  worker's side), a job source the test answers, an engine client that
  records the reports the real reporter threads deliver.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.io.source import PollResult
from workflow_sdk.supervisor.loop.arbiter import PRIVATE_ENV, Supervisor
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobEntry, JobLedger
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.signals import HANDLED_SIGNALS
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.stops import Stopper
from workflow_sdk.supervisor.loop.watch import RunningJobWatch
from workflow_sdk.supervisor.worker.main import WorkerSpec
from workflow_sdk.supervisor.worker.protocol import JobDone, Ready, RunJob

MIB = 2**20

# -- jobs ----------------------------------------------------------------------------


def job(job_id: str, lease: int = 30, job_type: str = "a", **fields: Any) -> dict[str, Any]:
    """A polled job whose lease is ``lease`` seconds long."""
    return {
        "id": job_id,
        "jobType": job_type,
        "instanceId": "i",
        "lockedAt": "2026-01-01T00:00:00Z",
        "lockExpiresAt": f"2026-01-01T00:{lease // 60:02d}:{lease % 60:02d}Z",
        **fields,
    }


def kafka_job(job_id: str, job_type: str) -> dict[str, Any]:
    return {"id": job_id, "jobType": job_type, "instanceId": "i", "kafkaRecord": {}}


# -- slots without processes ---------------------------------------------------------


class StandInProcess:
    """A worker process that is not there: its signals go nowhere (``pid``
    None); the slot records them in ``signals_sent``."""

    pid = None
    sentinel = -1
    exitcode: int | None = None

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        pass


class StandInConn:
    """A worker's channel, parent's end: keeps what is sent; nothing comes back."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        if self.closed:
            raise OSError("closed")
        self.sent.append(message)

    def poll(self) -> bool:
        return False

    def recv(self) -> Any:
        raise EOFError

    def close(self) -> None:
        self.closed = True


class StandInPs:
    """What a memory sample reads of a worker: its RSS (or an error)."""

    def __init__(self, rss: int, error: bool = False) -> None:
        self.rss = rss
        self.error = error

    def memory_info(self) -> StandInPs:
        if self.error:
            import psutil  # noqa: PLC0415

            raise psutil.NoSuchProcess(1)
        return self


def make_slot(
    number: int,
    state: SlotState = SlotState.IDLE,
    *,
    job_types: frozenset[str] = frozenset(),
    ps: Any = None,
    rss_bytes: int = 0,
    surge: bool = False,
    max_jobs: int = 0,
    jobs_done: int = 0,
    retiring: bool = False,
    boot_deadline: float = 60.0,
) -> WorkerSlot:
    """A slot in ``state`` with a stand-in process and channel, which has run
    ``jobs_done`` jobs (through its own methods, as the loop would) and, with
    ``retiring``, was told to leave after its job."""
    slot = WorkerSlot(
        number,
        StandInProcess(),  # type: ignore[arg-type]
        StandInConn(),  # type: ignore[arg-type]
        boot_deadline,
        ps=ps,
        surge=surge,
        max_jobs=max_jobs,
        state=SlotState.IDLE if jobs_done else state,
        job_types=job_types,
    )
    for n in range(jobs_done):
        entry = JobEntry({"id": f"done-{n}", "jobType": "a"}, math.inf, 0.0)
        assert slot.start(entry)
        slot.job_done(entry.job_id, 0)
    if jobs_done and state is not SlotState.IDLE:
        raise ValueError("a slot with jobs done is made idle")
    if rss_bytes:
        slot.sampled(rss_bytes)
    if retiring:
        slot.retire("recycle_jobs", 0.0)
    return slot


def idle_slot(number: int) -> WorkerSlot:
    return make_slot(number, SlotState.IDLE, job_types=frozenset({"a"}))


def pool_of(target: int, *slots: WorkerSlot) -> WorkerPool:
    pool = WorkerPool(target)
    for slot in slots:
        pool.add(slot)
    return pool


def sent_jobs(slot: WorkerSlot) -> list[str]:
    """The ids of the jobs sent to ``slot``'s stand-in channel."""
    conn: Any = slot.conn
    return [m.context["id"] for m in conn.sent if isinstance(m, RunJob)]


# -- a job source ----------------------------------------------------------------------


class StandInSource:
    """A job source (``io.source.JobSource``) that records what it is asked;
    the test answers its requests (``answer``)."""

    def __init__(self, following: frozenset[str] | None = None) -> None:
        self.busy = False
        self.armed = False
        self.sent_at = 0.0
        self.requested_at = 0.0
        self.following = following
        self.requests: list[tuple[int, tuple[str, ...], int]] = []
        self.settled: list[tuple[str, bool]] = []
        self.given_back: list[str] = []
        self.answers_seen = 0
        self.retries: set[str] = set()
        self.closed = False
        self.wake: Callable[[], None] = lambda: None
        self._results: SimpleQueue[PollResult] = SimpleQueue()

    def request(self, max_jobs: int, job_types: Sequence[str], after: int = 0) -> None:
        self.busy = True
        self.requested_at = time.monotonic()
        self.requests.append((max_jobs, tuple(job_types), after))

    def answer(
        self,
        jobs: list[dict[str, Any]],
        *,
        error: Any = None,
        leased: bool = True,
        waited: bool = False,
    ) -> None:
        """The answer to the request out (from the source's "thread")."""
        asked = self.requests[-1][0] if self.requests else len(jobs)
        sent_at = self.requested_at or time.monotonic()
        self._results.put(PollResult(asked, sent_at, 0.001, jobs, error, leased, waited))
        self.wake()

    def take(self) -> PollResult | None:
        if self._results.empty():
            return None
        self.busy = False
        return self._results.get()

    def answered(self, count: int) -> None:
        self.answers_seen = max(self.answers_seen, count)

    def disarm(self) -> bool:
        return False

    def settle(self, job: dict[str, Any], done: bool) -> None:
        self.settled.append((str(job["id"]), done))

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        return str(job["id"]) in self.retries

    def follow(self, job_types: frozenset[str]) -> None:
        self.following = job_types

    def give_back(self, job: dict[str, Any]) -> None:
        self.given_back.append(job["id"])

    def stats(self) -> SourceStats:
        return SourceStats(fetched=len(self.settled))

    def close(self) -> None:
        self.closed = True


def intake_with(
    *slots: WorkerSlot, limit: int = 4, source: StandInSource | None = None
) -> tuple[Intake, StandInSource]:
    """An intake over a pool of ``slots``, its source open."""
    intake = Intake(
        pool_of(len(slots), *slots), JobLedger(limit), ClaimPolicy(), SupervisorStats(), 1.0
    )
    stand_in = source or StandInSource()
    intake.open(lambda job_types, wake: stand_in, ("a",), lambda: None)  # type: ignore[arg-type, return-value]
    return intake, stand_in


def running(intake: Intake, slot: WorkerSlot, job_id: str, now: float) -> JobEntry:
    """``job_id`` claimed (a 30 s lease) and running on ``slot``, no time limit."""
    intake.claim(job(job_id), now, now, leased=True)
    entry = intake.ledger.get(job_id)
    assert entry is not None and slot.start(entry)
    return intake.ledger.start(job_id, slot.number, now, 0.0)


# -- reports -----------------------------------------------------------------------------


@dataclass
class Handed:
    """One report handed to the reporter threads."""

    outcome: Outcome
    lease_end: float | None
    stale_check: Any
    fate: Any


class RecordingReporter:
    """The reporter threads' stand-in (``reports.ReportSink``): keeps what it
    is handed; the test ends each report (``end``)."""

    def __init__(self) -> None:
        self.handed: list[Handed] = []
        self.stopped = False
        self.on_status: Callable[[Outcome, ReportStatus], None] = lambda o, s: None
        self.on_retry: Callable[[Outcome, Any], None] = lambda o, e: None

    def start(
        self,
        on_status: Callable[[Outcome, ReportStatus], None],
        on_retry: Callable[[Outcome, Any], None],
    ) -> RecordingReporter:
        """The desk's ``start_reporter``."""
        self.on_status, self.on_retry = on_status, on_retry
        return self

    def submit(
        self,
        outcome: Outcome,
        lease_end: float | None = None,
        stale_check: Any = None,
        fate: Any = None,
    ) -> None:
        self.handed.append(Handed(outcome, lease_end, stale_check, fate))

    def end(self, index: int, status: ReportStatus) -> None:
        """The report handed ``index``-th ended with ``status``."""
        self.on_status(self.handed[index].outcome, status)

    def reported(self) -> list[tuple[str, bool]]:
        return [(h.outcome.job_id, h.outcome.succeeded) for h in self.handed]

    def pending(self) -> int:
        return 0

    def wait_idle(self, timeout: float) -> bool:
        return True

    def stop(self, give_up: bool) -> None:
        self.stopped = True


def desk_for(
    intake: Intake, *, reader: Any = None, wake: Callable[[], None] = lambda: None
) -> tuple[ReportDesk, RecordingReporter]:
    reporter = RecordingReporter()
    desk = ReportDesk(
        intake.pool,
        intake.ledger,
        intake,
        intake.stats,
        reader=reader,
        start_reporter=reporter.start,
        wake=wake,
    )
    return desk, reporter


def stopper_for(
    intake: Intake, desk: ReportDesk, collect: Callable[[WorkerSlot], None] = lambda slot: None
) -> Stopper:
    """A stopper whose watch asks nothing (no reader, no renewer)."""
    watch = RunningJobWatch(
        intake.ledger, wake=lambda: None, reader=None, renewer=None, worker_id="w"
    )
    return Stopper(
        intake.pool, intake.ledger, intake, desk, intake.stats, watch=watch, collect=collect
    )


# -- driving a real Supervisor ---------------------------------------------------------


class FakeWorkerProcess:
    """A worker process stand-in with a real sentinel: a pipe whose read end
    becomes readable (end of file) when the "process" exits."""

    pid = None  # the slot's signals go nowhere (it records them)

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self.exitcode: int | None = None

    @property
    def sentinel(self) -> int:
        return self._read

    def exit(self, code: int) -> None:
        """The process ends with ``code`` (negative: killed by that signal)."""
        if self.exitcode is None:
            self.exitcode = code
            os.close(self._write)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        self.exit(0)
        os.close(self._read)


@dataclass
class StartedWorker:
    """A worker the rig's starter started: its spec, its process, and the
    worker's end of its channel (the test plays the worker)."""

    spec: WorkerSpec
    process: FakeWorkerProcess
    conn: Connection

    def ready(self, *job_types: str) -> None:
        self.conn.send(Ready(4321, job_types or ("a",)))

    def received(self) -> list[Any]:
        """What the parent sent since the last look."""
        messages = []
        try:
            while self.conn.poll():
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        return messages

    def done(self, job_id: str, *, succeeded: bool = True, rss: int = 50 * MIB) -> None:
        if succeeded:
            outcome = Outcome(job_id, "a", True, {"total": 3}, duration=0.01)
        else:
            outcome = Outcome.failure(job_id, "a", "card declined", retryable=True)
        self.conn.send(JobDone(outcome, rss))

    @property
    def closed_by_parent(self) -> bool:
        """The parent closed its end (the worker would read end of file)."""
        try:
            self.conn.poll()
            self.conn.recv()
        except EOFError:
            return True
        except OSError:
            return True
        return False


class FakeStarter:
    """A ``startup.WorkerStarter`` that starts no process: each "worker" is a
    ``FakeWorkerProcess`` and a real pipe."""

    def __init__(self) -> None:
        self.started: list[StartedWorker] = []
        self.fail_next = 0

    def __call__(self, spec: WorkerSpec) -> tuple[Any, Connection]:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("the fork server is gone")
        parent, child = multiprocessing.Pipe(duplex=True)
        process = FakeWorkerProcess()
        self.started.append(StartedWorker(spec, process, child))
        return process, parent

    def close(self) -> None:
        for worker in self.started:
            worker.process.close()
            worker.conn.close()


class FakeClient:
    """An engine client (``WorkerEngineClient``) that records reports; it
    cannot read instances nor renew leases (no stale checks, no renewal)."""

    timeout = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed: list[str] = []
        self.failed: list[tuple[str, bool]] = []

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        raise AssertionError("the rig's source answers polls")

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            self.completed.append(job_id)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        with self._lock:
            self.failed.append((job_id, retryable))


CONFIG = """\
[supervisor]
handlers = ["fakes_handlers:registry"]
workers = {workers}
poll_interval = 0.5
stale_check_interval = 0
{extra}
"""


@dataclass
class SupervisorRig:
    """A real ``Supervisor`` given a fake starter, source and client; the
    test ticks it (``tick_until``) and plays its workers (``worker``)."""

    sup: Supervisor
    starter: FakeStarter
    source: StandInSource
    client: FakeClient
    opened_with: list[tuple[str, ...]] = field(default_factory=list)

    def open_source(self, job_types: tuple[str, ...], wake: Callable[[], None]) -> StandInSource:
        self.opened_with.append(job_types)
        self.source.wake = wake
        return self.source

    def worker(self, number: int) -> StartedWorker:
        """The latest worker started for slot ``number``."""
        return [w for w in self.starter.started if w.spec.number == number][-1]

    def tick_until(self, predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
        """Tick until ``predicate()`` holds (each tick waits for an event or
        its deadline, never longer than a second)."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            self.sup.tick()

    def ready_all(self) -> None:
        """Every started worker says it is ready; ticked until the pool is."""
        for worker in self.starter.started:
            worker.ready()
        self.tick_until(
            lambda: all(s.state is SlotState.IDLE for s in self.sup.pool.slots.values()),
            "every worker ready",
        )


@contextlib.contextmanager
def supervisor_rig(
    tmp_path: Path,
    monkeypatch: Any,
    *,
    workers: int = 1,
    extra: str = "",
    start: bool = True,
) -> Iterator[SupervisorRig]:
    """A ``SupervisorRig`` for a configuration file of ``workers`` workers and
    ``extra`` TOML, started (``start``) and closed after the block. The
    environment the supervisor cleans, and the signal handlers it installs,
    are restored."""
    for name in (*PRIVATE_ENV, "ROCHALLOR_ENGINE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    handlers = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    path = tmp_path / "supervisor.toml"
    path.write_text(CONFIG.format(workers=workers, extra=extra))
    starter, source, client = FakeStarter(), StandInSource(), FakeClient()
    rig = SupervisorRig(None, starter, source, client)  # type: ignore[arg-type]
    rig.sup = Supervisor(
        load_config(path),
        client=client,  # type: ignore[arg-type]
        source=rig.open_source,  # type: ignore[arg-type]
        start_worker=starter,
    )
    try:
        if start:
            rig.sup.start()
        yield rig
    finally:
        try:
            rig.sup.close()
        finally:
            starter.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
