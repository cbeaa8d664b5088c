"""Per-job-type limits: what ``[job_types."x"]`` comes to, and the loop keeping to it.

``concurrency`` (the claim plan and the dispatch), the memory limits of a
worker running a type (and idle after it), and a worker's thread count per
type (``worker.job_threads``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from unit.fakes import (
    MIB,
    RecordingReporter,
    StandInPs,
    intake_with,
    job,
    make_slot,
    pool_of,
    stopper_for,
    supervisor_rig,
)
from unit.fakes import desk_for as make_desk
from workflow_sdk.supervisor.config import parse_config
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy, concurrency_room, plan_poll
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobEntry, JobLedger, JobState
from workflow_sdk.supervisor.loop.lifecycle import WorkerLifecycle
from workflow_sdk.supervisor.loop.memory_watch import MemoryRules, sample_memory
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.type_limits import MemoryLimits, TypeLimits, pool_threads
from workflow_sdk.supervisor.worker.job_threads import JobThreads
from workflow_sdk.threads_limit import PoolLimitResult


def config_of(pool: dict[str, Any] | None = None, **types: dict[str, Any]) -> Any:
    return parse_config({"supervisor": {"handlers": ["x"], **(pool or {})}, "job_types": types})


# -- what the settings come to -------------------------------------------------------


def test_each_key_overrides_the_pools_for_its_type_only() -> None:
    limits = TypeLimits(
        config_of(
            {"max_memory_mb": 500, "max_memory_hard_mb": 800},
            big={"concurrency": 1, "max_memory_mb": 4000, "threads": 4, "retry_delay": 2.0},
            hard={"max_memory_hard_mb": 900},
            unlimited={"max_memory_mb": 0},
            light={"timeout": 5},
        )
    )
    assert dict(limits.concurrency) == {"big": 1}
    assert dict(limits.threads) == {"big": 4}
    assert limits.memory("big") == MemoryLimits(4000, 5000), "1.25 x its own soft limit"
    assert limits.memory("hard") == MemoryLimits(500, 900), "the pool's soft limit"
    assert limits.memory("unlimited") == MemoryLimits(0, 0)
    assert limits.memory("light") == MemoryLimits(500, 800)
    assert limits.memory(None) == MemoryLimits(500, 800)
    assert limits.hard_limits_bytes() == {
        "big": 5000 * MIB,
        "hard": 900 * MIB,
        "unlimited": 0,
    }
    assert limits.memory_setting("max_memory_mb", "big") == '[job_types."big"] max_memory_mb'
    assert limits.memory_setting("max_memory_mb", "light") == "max_memory_mb"
    policy = limits.retry_delay("big")
    assert policy is not None and policy.base == 2.0 and policy.lease_margin == 3.0
    assert limits.retry_delay("light") is None


def test_no_type_sections_nothing_by_type() -> None:
    limits = TypeLimits(config_of())
    assert not limits.concurrency and not limits.threads and not limits.memory_by_type
    assert limits.default_threads == 1  # threads_per_worker's default


def test_the_pools_thread_count_where_the_configuration_has_one() -> None:
    class WithThreads:
        threads_per_worker = 2

    class Unset:
        threads_per_worker = 0

    assert pool_threads(WithThreads()) == 2  # type: ignore[arg-type]
    assert pool_threads(Unset()) is None  # type: ignore[arg-type]
    assert pool_threads(config_of().supervisor) == 1  # threads_per_worker's default


# -- concurrency: the claim plan -------------------------------------------------------


def serving(number: int, state: SlotState = SlotState.IDLE) -> WorkerSlot:
    return make_slot(number, state, job_types=frozenset({"big", "light"}))


def hold(ledger: JobLedger, job_id: str, job_type: str, *, run_on: int | None = None) -> None:
    ledger.claim({"id": job_id, "jobType": job_type}, 30.0, 0.0)
    if run_on is not None:
        ledger.start(job_id, run_on, 0.0, 0.0)


def test_a_type_at_its_limit_is_left_out_of_the_poll() -> None:
    ledger = JobLedger(8)
    hold(ledger, "b1", "big", run_on=1)
    types, cap = concurrency_room(["big", "light"], ledger, {"big": 1})
    assert (types, cap) == (["light"], None)


def test_a_poll_naming_a_limited_type_asks_for_no_more_than_its_room() -> None:
    """Pins: four idle workers, ``big`` limited to 2 with none held: a poll
    for 4 jobs of big and light could bring 4 big ones; it asks for 2."""
    pool = pool_of(4, *(serving(n) for n in range(1, 5)))
    policy = ClaimPolicy(concurrency={"big": 2})
    plan = plan_poll(pool, JobLedger(8), policy)
    assert (plan.wanted, plan.job_types, plan.type_cap) == (2, ["big", "light"], 2)
    assert not plan.held_back, "not the ledger's bound"


def test_claimed_jobs_and_held_retries_count_against_the_limit() -> None:
    ledger = JobLedger(8)
    hold(ledger, "b1", "big")  # claimed, waiting for a worker
    ledger.claim({"id": "b2", "jobType": "big", "retriesRemaining": 2}, 30.0, 0.0)
    ledger.start("b2", 1, 0.0, 0.0)
    ledger.finish("b2", 1.0)  # reporting: its worker is free, the job no longer counts
    assert concurrency_room(["big"], ledger, {"big": 2}) == (["big"], 1)
    # Its retry, come before the fail's answer, is held: claimed once the
    # answer is in, so it counts.
    retry = {"id": "b2", "jobType": "big", "retriesRemaining": 1}
    assert ledger.claim(retry, 31.0, 1.0).value == "retry_held"
    assert concurrency_room(["big"], ledger, {"big": 2}) == ([], 0)


def test_every_type_at_its_limit_asks_for_nothing() -> None:
    ledger = JobLedger(8)
    hold(ledger, "b1", "big", run_on=1)
    pool = pool_of(2, make_slot(1, SlotState.BUSY), make_slot(2, job_types=frozenset({"big"})))
    plan = plan_poll(pool, ledger, ClaimPolicy(concurrency={"big": 1}))
    assert (plan.wanted, plan.unbounded, plan.job_types) == (0, 0, [])


def test_limited_room_is_not_counted_as_held_back_by_the_ledger() -> None:
    intake, source = intake_with(*(serving(n) for n in range(1, 5)), limit=8)
    intake.claims.concurrency = {"big": 1}
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    assert source.requests == [(1, ("big", "light"), 0)]
    assert intake.stats.claims_held_back == 0


# -- concurrency: the dispatch ---------------------------------------------------------


def test_dispatch_starts_no_more_of_a_type_than_its_limit() -> None:
    """Pins: two big jobs claimed (a duplicate's retry, or a poll before a
    SIGHUP lowered the limit) and two idle workers: one starts, the other
    waits, and a light job claimed after them is not held back."""
    intake, _ = intake_with(serving(1), serving(2), serving(3), limit=8)
    intake.claims.concurrency = {"big": 1}
    for job_id, job_type in (("b1", "big"), ("b2", "big"), ("l1", "light")):
        intake.claim(job(job_id, job_type=job_type), 0.0, 0.0, leased=True)
    config = config_of(big={"concurrency": 1})
    intake.dispatch_claimed(1.0, config)
    running = {e.job_id for e in intake.ledger.running()}
    assert running == {"b1", "l1"}
    assert [e.job_id for e in intake.ledger.claimed()] == ["b2"]
    # b1 done: b2 may start.
    intake.ledger.finish("b1", 2.0)
    slot = intake.pool.slots[1]
    slot.job_done("b1", 0)
    intake.dispatch_claimed(2.0, config)
    assert intake.ledger.get("b2").state is JobState.RUNNING  # type: ignore[union-attr]


# -- memory by type ----------------------------------------------------------------


def test_a_worker_running_a_type_with_its_own_hard_limit_is_judged_by_it() -> None:
    def running_slot(number: int, job_type: str, rss_mb: int) -> WorkerSlot:
        slot = make_slot(number, ps=StandInPs(rss_mb * MIB))
        assert slot.start(JobEntry({"id": f"j{number}", "jobType": job_type}, math.inf, 0.0))
        return slot

    # RSS only (no full reads): what it owns is its RSS.
    rules = MemoryRules(hard=800 * MIB, hard_by_type={"big": 5000 * MIB})
    big, light = running_slot(1, "big", 3000), running_slot(2, "light", 900)
    verdict = sample_memory([big, light], rules)
    assert verdict.kill == [light], "big is under its own 5000, light over the pool's 800"
    verdict = sample_memory([running_slot(3, "big", 6000)], rules)
    assert len(verdict.kill) == 1


def lifecycle_over(*slots: WorkerSlot) -> tuple[WorkerLifecycle, Intake, RecordingReporter]:
    intake, _ = intake_with(*slots)
    desk, reporter = make_desk(intake)
    stopper = stopper_for(intake, desk)
    return WorkerLifecycle(intake.pool, stopper, SupervisorStats()), intake, reporter


def test_after_a_job_the_soft_limit_of_its_type_decides_and_idle_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pins: a worker that ran a ``big`` job (own soft limit 4000) and uses
    3000 MiB is kept, after the job and while idle (the pool's 500 would
    recycle it a second later); after a light job the pool's limit applies."""
    config = config_of({"max_memory_mb": 500}, big={"max_memory_mb": 4000}, light={"timeout": 3})
    limits = TypeLimits(config)
    slot = make_slot(1, job_types=frozenset({"big", "light"}), ps=StandInPs(3000 * MIB))
    life, intake, _ = lifecycle_over(slot)
    intake.claim(job("b1", job_type="big"), 0.0, 0.0, leased=True)
    intake.dispatch_claimed(1.0, config)
    slot.job_done("b1", 3000 * MIB)
    life.check_recycle(slot, config.supervisor, limits)
    assert not slot.retiring
    life.sample_memory(2.0, config.supervisor, limits)
    assert not slot.retiring, "idle after big: big's limit"
    intake.claim(job("l1", job_type="light"), 3.0, 3.0, leased=True)
    intake.dispatch_claimed(3.0, config)
    slot.job_done("l1", 3000 * MIB)
    with caplog.at_level(logging.WARNING, "workflow_sdk.supervisor"):
        life.check_recycle(slot, config.supervisor, limits)
    assert slot.retiring and slot.exit_reason == "recycle_memory"
    assert "over max_memory_mb = 500; replacing it" in caplog.text


def test_a_hard_kill_by_a_types_limit_names_its_section() -> None:
    config = config_of(big={"max_memory_mb": 1000, "max_memory_hard_mb": 2000})
    limits = TypeLimits(config)
    slot = make_slot(1, job_types=frozenset({"big"}), ps=StandInPs(2500 * MIB))
    life, intake, reporter = lifecycle_over(slot)
    intake.claim(job("b1", job_type="big"), 0.0, 0.0, leased=True)
    intake.dispatch_claimed(1.0, config)
    life.sample_memory(2.0, config.supervisor, limits)
    assert slot.state is SlotState.STOPPING
    life.stopper.desk.hand_over()
    (handed,) = reporter.handed
    assert 'over [job_types."big"] max_memory_hard_mb = 2000' in handed.outcome.error_message


# -- threads by type (the worker's side) -------------------------------------------------


class Pools:
    """Stand-ins for threadpoolctl: the sizes, what was set."""

    def __init__(self) -> None:
        self.sizes = {"libopenblas": 2, "libgomp": 2}
        self.calls: list[Any] = []

    def limit(self, n: int) -> PoolLimitResult:
        self.calls.append(n)
        self.sizes = dict.fromkeys(self.sizes, n)
        return PoolLimitResult(n, available=True)

    def read(self) -> dict[str, int]:
        return dict(self.sizes)

    def restore(self, sizes: Mapping[str, int]) -> str:
        self.calls.append(dict(sizes))
        self.sizes = dict(sizes)
        return ""


def job_threads(by_type: dict[str, int], default: int | None, pools: Pools) -> JobThreads:
    return JobThreads(
        by_type, default, limiter=pools.limit, read_sizes=pools.read, restore=pools.restore
    )


def test_threads_change_only_when_the_type_wants_another_count() -> None:
    pools = Pools()
    threads = job_threads({"big": 4}, 1, pools)
    threads.before_job("light")  # the pool's 1 is in force already
    assert pools.calls == []
    threads.before_job("big")
    threads.before_job("big")
    assert pools.calls == [4], "cheap when unchanged"
    threads.before_job("light")
    assert pools.calls == [4, 1]


def test_without_a_pool_count_the_libraries_sizes_come_back() -> None:
    pools = Pools()
    threads = job_threads({"big": 4}, None, pools)
    threads.before_job("light")
    threads.before_job("big")
    assert pools.sizes == {"libopenblas": 4, "libgomp": 4}
    threads.before_job("light")
    assert pools.sizes == {"libopenblas": 2, "libgomp": 2}
    assert pools.calls == [4, {"libopenblas": 2, "libgomp": 2}]


def test_without_threadpoolctl_it_warns_once_and_the_jobs_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def missing(n: int) -> PoolLimitResult:
        calls.append(n)
        return PoolLimitResult(n, available=False)

    threads = JobThreads({"big": 4, "other": 2}, 1, limiter=missing)
    with caplog.at_level(logging.WARNING, "workflow_sdk.worker"):
        threads.before_job("big")
        threads.before_job("other")
    assert calls == [4, 2]
    assert caplog.text.count("threadpoolctl is not installed") == 1


# -- SIGHUP ------------------------------------------------------------------------------


def test_sighup_brings_the_new_types_settings_with_the_new_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the reload's first new worker is ready: the claim plan's limits,
    the desk's retry delays; and that worker was started with the new
    thread counts."""
    with supervisor_rig(tmp_path, monkeypatch, workers=1) as rig:
        rig.ready_all()
        assert not rig.sup.claim_policy.concurrency
        path = tmp_path / "supervisor.toml"
        extra = '[job_types."a"]\nconcurrency = 1\nthreads = 3\nretry_delay = 2\n'
        path.write_text(path.read_text() + extra)
        rig.sup.handle_hup()
        rig.tick_until(lambda: len(rig.starter.started) == 2, "the reload's new worker")
        new = rig.starter.started[1]
        assert dict(new.spec.type_threads) == {"a": 3}
        new.ready()
        rig.tick_until(lambda: rig.sup.claim_policy.concurrency, "the new configuration")
        assert dict(rig.sup.claim_policy.concurrency) == {"a": 1}
        assert rig.sup.desk.limits is rig.sup.limits
        assert rig.sup.limits.retry_delay("a") is not None
