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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
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
    # A retry held behind its previous attempt's report waits for a worker
    # too, once that report is answered.
    waiting = ledger.count(JobState.CLAIMED) + ledger.attempts_held
    ready = len(idle) + len(busy)
    room = ledger.room()
    wanted = policy.wanted(len(idle), waiting, room, types, workers=ready)
    unbounded = policy.wanted(len(idle), waiting, ledger.limit, types, workers=ready)
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
            later = policy.wanted(len(idle), waiting, room + answers, types, workers=ready)
            if later > 0:
                armed = ArmedPoll(answers + held_behind, later)
                break
    return PollPlan(wanted, types, len(idle), unbounded, armed)


__all__ = ["AHEAD_SHARE", "ArmedPoll", "ClaimPolicy", "PollPlan", "plan_poll"]
