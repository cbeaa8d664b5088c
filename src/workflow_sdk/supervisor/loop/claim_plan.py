"""The claim plan: how many jobs to claim, one per idle worker and one ahead for short jobs.

Claiming only for idle workers makes every job wait one poll round trip
after its worker frees up. For short jobs that round trip is a large part of
the job. When a job type is measured short, the parent may hold one claimed
job per worker in waiting, so a worker that finishes starts the next job
straight away.

A job claimed ahead waits for a worker, and its lease runs meanwhile. The
wait is about one handler run (the worker finishes its current job first),
so a job type counts as short only when its measured handler time is under
``AHEAD_SHARE`` of its lease: the wait then costs a sliver of the lease and
the lease check before the start (``Intake.dispatch_claimed``) is left
with nothing to catch. Unmeasured and long job types are never claimed
ahead, and nothing is ever claimed beyond the job ledger's room.

Without a lease (jobs from Kafka: ``lease = inf``) there is no lease to burn;
any measured job type may be claimed ahead, within the same room.

A job type with a ``concurrency`` limit is claimed only while fewer of its
jobs are held (claimed or running) than the limit, and a poll that names it
asks for no more jobs than its room: the engine may answer with jobs of any
of the poll's types, so a bigger poll could bring more of it than may run.

After a poll that found no job the next one waits ``poll_interval``
(``EmptyAnswer``), but only while nothing says the engine may have jobs now:
a poll for a type the empty one did not ask for (an ahead poll asks only for
the short types; a worker that goes idle serves them all), or a report the
engine answered since the empty poll was sent (a completion makes the
instance's next job), goes out at once.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from workflow_sdk.supervisor.loop.ledger import JobLedger, JobState
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

#: A job type is short when its handler time is under this share of its lease.
AHEAD_SHARE = 0.02
#: Handler runs measured before a job type may be claimed ahead.
MIN_SAMPLES = 3
#: Weight of the newest run in the moving average (a slow run counts at once).
SMOOTHING = 0.3
#: Jobs a poll only for jobs ahead (no worker idle) asks for at least: one
#: poll per job costs the parent as much CPU as the rest of the job's
#: handling; claimed jobs still waiting cover the workers meanwhile.
AHEAD_BATCH = 2


class ClaimPolicy:
    """Per job type: a moving average of handler time; the claim count to ask for."""

    def __init__(
        self,
        *,
        share: float = AHEAD_SHARE,
        min_samples: int = MIN_SAMPLES,
        smoothing: float = SMOOTHING,
        ahead_batch: int = AHEAD_BATCH,
        concurrency: Mapping[str, int] | None = None,
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        #: job type -> the most of its jobs held (claimed or running) at once
        #: (``[job_types."x"] concurrency``; the arbiter replaces it on SIGHUP)
        self.concurrency: Mapping[str, int] = MappingProxyType(dict(concurrency or {}))
        self.share = share
        self.min_samples = min_samples
        self.smoothing = smoothing
        self.ahead_batch = max(1, ahead_batch)
        self._average: dict[str, float] = {}
        self._samples: dict[str, int] = {}
        self._lease: dict[str, float] = {}
        #: The verdict of ``short`` per type, kept up to date by ``observe``
        #: (asked on every tick of the main loop).
        self._short: set[str] = set()

    def observe(self, job_type: str, seconds: float, lease: float) -> None:
        """A handler of ``job_type`` ran ``seconds``; its job had a lease of
        ``lease`` seconds (``inf``: no lease)."""
        seconds = max(0.0, seconds)
        previous = self._average.get(job_type)
        if previous is None:
            self._average[job_type] = seconds
        else:
            # The slower of the new run and the smoothed average: one long
            # run stops claiming ahead at once; it resumes as runs get short.
            smoothed = previous + self.smoothing * (seconds - previous)
            self._average[job_type] = max(seconds, smoothed) if seconds > previous else smoothed
        self._samples[job_type] = self._samples.get(job_type, 0) + 1
        self._lease[job_type] = lease
        if self._judge(job_type):
            self._short.add(job_type)
        else:
            self._short.discard(job_type)

    def average(self, job_type: str) -> float | None:
        """The moving average of ``job_type``'s handler time, if measured."""
        return self._average.get(job_type)

    def short(self, job_type: str) -> bool:
        """Measured, and one handler run is a sliver of the lease."""
        return job_type in self._short

    def _judge(self, job_type: str) -> bool:
        if self._samples.get(job_type, 0) < self.min_samples:
            return False
        lease = self._lease.get(job_type, 0.0)
        if math.isinf(lease):
            return True
        return self._average[job_type] < self.share * lease

    def short_types(self, job_types: Sequence[str]) -> list[str]:
        return [t for t in job_types if t in self._short]

    def wanted(
        self,
        idle_workers: int,
        claimed_waiting: int,
        room: int,
        job_types: Sequence[str],
        workers: int = 0,
    ) -> int:
        """Jobs to claim now for a poll over ``job_types``.

        One per idle worker; when every type of the poll is short, also one
        ahead for each of ``workers`` (the ready workers serving them). Less
        the claimed jobs already waiting, never more than ``room``. With no
        worker idle, nothing until ``ahead_batch`` jobs (at most ``workers``)
        can be asked for in one poll.
        """
        target = idle_workers
        if workers > 0 and job_types and self._short.issuperset(job_types):
            target += workers
        wanted = max(0, min(target - claimed_waiting, room))
        if idle_workers == 0 and wanted < min(self.ahead_batch, workers):
            return 0
        return wanted


def concurrency_room(
    job_types: list[str], ledger: JobLedger, limits: Mapping[str, int]
) -> tuple[list[str], int | None]:
    """The poll's types without those at their ``concurrency`` limit, and the
    most jobs the poll may ask for (None: no limit applies): the smallest room
    of the limited types it still names, since the engine may answer with
    jobs of any of its types. Next attempts held behind their report count as
    held: they are claimed once that report is answered."""
    limited = [t for t in job_types if t in limits]
    if not limited:
        return job_types, None
    held = ledger.by_type(JobState.CLAIMED, JobState.RUNNING)
    for job_type, count in ledger.attempts_held_by_type().items():
        held[job_type] = held.get(job_type, 0) + count
    rooms = {t: limits[t] - held.get(t, 0) for t in limited}
    kept = [t for t in job_types if rooms.get(t, 1) > 0]
    if not kept:
        return [], 0
    open_rooms = [rooms[t] for t in kept if t in rooms]
    return kept, min(open_rooms) if open_rooms else None


@dataclass(frozen=True)
class EmptyAnswer:
    """A poll that found no job: what it asked for, and what was known then."""

    job_types: frozenset[str]
    #: report answers the main loop had taken when the poll was requested
    answers_taken: int
    #: the end of the wait (``poll_interval`` after the answer)
    until: float

    def holds(self, now: float, job_types: Collection[str], answers_taken: int) -> bool:
        """Whether a poll for ``job_types`` should still wait: the wait is not
        over, the poll asks for no type the empty one did not, and no report
        was answered since that poll was requested (its completion may have
        made a job the empty poll could not see)."""
        return (
            now < self.until
            and answers_taken <= self.answers_taken
            and self.job_types.issuperset(job_types)
        )


@dataclass(frozen=True)
class ArmedPoll:
    """A poll held back by the ledger's room, to go out once report answers free it."""

    #: report answers (of those in flight) that free enough room
    answers: int
    #: jobs the poll asks for then
    jobs: int


@dataclass(frozen=True)
class PollPlan:
    """Verdict: how many jobs to claim now, and of which types."""

    wanted: int
    job_types: list[str]
    #: idle workers the poll serves
    idle: int
    #: what ``wanted`` would be with all of the ledger's room free
    unbounded: int
    #: held back: the poll to send once enough report answers have come
    armed: ArmedPoll | None = None
    #: the most jobs the per-type concurrency limits let this poll ask for
    #: (None: no limit applies)
    type_cap: int | None = None

    @property
    def held_back(self) -> bool:
        """The ledger's room keeps the poll below what the workers want."""
        return self.unbounded > self.wanted


def plan_poll(pool: WorkerPool, ledger: JobLedger, policy: ClaimPolicy) -> PollPlan:
    """One per idle worker; one ahead per worker for job types measured
    short. Backpressure: never beyond the ledger's room, so when reports lag
    claiming waits, and no claimed job waits past its lease. Held back by
    the room, the plan says how many report answers would free enough."""
    # One pass over the slots: this runs on every tick.
    idle: list[WorkerSlot] = []
    busy: list[WorkerSlot] = []
    for slot in pool.slots.values():
        if slot.retiring:
            continue
        if slot.state is SlotState.IDLE:
            idle.append(slot)
        elif slot.state is SlotState.BUSY:
            busy.append(slot)
    types = pool.job_types(idle) if idle else policy.short_types(pool.job_types(busy))
    cap: int | None = None
    if policy.concurrency and types:
        types, cap = concurrency_room(types, ledger, policy.concurrency)

    def capped(jobs: int) -> int:
        return jobs if cap is None else min(jobs, cap)

    # A retry held behind its previous attempt's report waits for a worker
    # too, once that report is answered.
    waiting = ledger.count(JobState.CLAIMED) + ledger.attempts_held
    ready = len(idle) + len(busy)
    room = ledger.room()
    wanted = capped(policy.wanted(len(idle), waiting, room, types, workers=ready))
    unbounded = capped(policy.wanted(len(idle), waiting, ledger.limit, types, workers=ready))
    armed = None
    if wanted == 0 and unbounded > 0:
        # Each report answer releases its job: the poll can go out as soon
        # as enough have come, sent by the source's thread without waking
        # the main loop for each answer (a wake-up per job saved).
        # The answer for a job with a retry held behind it frees no room (the
        # retry takes its place), and answers come in any order: count those
        # as if they came first.
        held_behind = ledger.attempts_held
        for answers in range(1, ledger.count(JobState.REPORTING) - held_behind + 1):
            later = capped(policy.wanted(len(idle), waiting, room + answers, types, workers=ready))
            if later > 0:
                armed = ArmedPoll(answers + held_behind, later)
                break
    return PollPlan(wanted, types, len(idle), unbounded, armed, cap)


__all__ = [
    "AHEAD_SHARE",
    "ArmedPoll",
    "ClaimPolicy",
    "EmptyAnswer",
    "PollPlan",
    "concurrency_room",
    "plan_poll",
]
