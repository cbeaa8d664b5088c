"""The worker pool's verdicts, without a fork: slots here hold stand-in processes
(``unit.fakes``)."""

from __future__ import annotations

import random

from unit.fakes import make_slot, pool_of
from workflow_sdk.supervisor.loop.pool import (
    BootVerdict,
    RecyclePolicy,
    ReloadStep,
)
from workflow_sdk.supervisor.loop.slots import SlotState


def test_missing_counts_neither_retiring_nor_surge_workers() -> None:
    pool = pool_of(3, make_slot(1), make_slot(2, retiring=True), make_slot(3, surge=True))
    assert pool.capacity() == 1
    assert pool.missing() == 2


def test_slot_numbers_are_reused_lowest_first() -> None:
    pool = pool_of(3, make_slot(1), make_slot(3))
    assert pool.next_slot_number() == 2


def test_idle_excludes_retiring_busy_and_booting() -> None:
    pool = pool_of(
        4,
        make_slot(1),
        make_slot(2, SlotState.BUSY),
        make_slot(3, SlotState.BOOTING),
        make_slot(4, retiring=True),
    )
    assert [s.number for s in pool.idle()] == [1]


def test_boot_failures_give_up_before_any_worker_ever_booted() -> None:
    pool = pool_of(2)
    assert pool.on_boot_failure(surge=False) is BootVerdict.GIVE_UP


def test_boot_failures_give_up_after_the_limit_in_a_row() -> None:
    slot = make_slot(1, SlotState.BOOTING)
    pool = pool_of(2, slot)
    pool.on_ready(slot, ("t",))
    verdicts = [pool.on_boot_failure(surge=False) for _ in range(pool.max_boot_failures)]
    assert verdicts[:-1] == [BootVerdict.RETRY] * (pool.max_boot_failures - 1)
    assert verdicts[-1] is BootVerdict.GIVE_UP


def test_a_ready_worker_resets_the_boot_failure_count() -> None:
    first, second = make_slot(1, SlotState.BOOTING), make_slot(2, SlotState.BOOTING)
    pool = pool_of(2, first, second)
    pool.on_ready(first, ("t",))
    for _ in range(pool.max_boot_failures - 1):
        pool.on_boot_failure(surge=False)
    pool.on_ready(second, ("t",))
    assert pool.on_boot_failure(surge=False) is BootVerdict.RETRY
    assert second.state is SlotState.IDLE and second.job_types == frozenset({"t"})


def test_a_surge_worker_that_cannot_boot_aborts_the_reload() -> None:
    pool = pool_of(2, make_slot(1), make_slot(2))
    pool.on_ready(pool.slots[1], ("t",))
    assert pool.begin_reload() == 2
    assert pool.on_boot_failure(surge=True) is BootVerdict.ABORT_RELOAD
    # The old workers stay; nothing is left to replace.
    assert pool.reload_step() == (ReloadStep.DONE, None)
    assert len(pool) == 2


def test_reload_replaces_one_worker_at_a_time() -> None:
    pool = pool_of(2, make_slot(1), make_slot(2))
    pool.begin_reload()
    assert pool.reload_step() == (ReloadStep.START_SURGE, None)
    surge = make_slot(3, SlotState.BOOTING, surge=True)
    pool.add(surge)
    assert pool.reload_step() == (ReloadStep.WAIT, None)
    pool.on_ready(surge, ("t",))
    step, old = pool.reload_step()
    assert step is ReloadStep.RETIRED and old is pool.slots[1]
    assert not surge.surge
    old.retire("reload", 0.0)
    pool.remove(old)
    assert pool.reload_step() == (ReloadStep.START_SURGE, None)
    surge2 = make_slot(1, SlotState.IDLE, surge=True)
    pool.add(surge2)
    step, old = pool.reload_step()
    assert step is ReloadStep.RETIRED and old is pool.slots[2]
    pool.remove(old)
    assert pool.reload_step() == (ReloadStep.DONE, None)


def test_reload_skips_workers_that_left_meanwhile() -> None:
    pool = pool_of(2, make_slot(1), make_slot(2))
    pool.begin_reload()
    pool.remove(pool.slots[1])
    pool.remove(pool.slots[2])
    assert pool.reload_step() == (ReloadStep.DONE, None)


def test_scale_down_retires_idle_workers_first_then_the_newest() -> None:
    pool = pool_of(3, make_slot(1), make_slot(2, SlotState.BUSY), make_slot(3))
    assert pool.scale(-2) == 1
    assert [s.number for s in pool.to_trim()] == [3, 1]
    assert pool.scale(-5) is None  # at least one worker
    assert pool.target == 1


def test_recycle_by_job_count_and_by_memory() -> None:
    policy = RecyclePolicy(max_jobs=10, jitter=0.0, max_memory_mb=100)
    pool = pool_of(1)
    assert pool.recycle_reason(make_slot(1, max_jobs=10, jobs_done=10), policy) == "recycle_jobs"
    fat = make_slot(1, rss_bytes=101 * 2**20)
    assert pool.recycle_reason(fat, policy) == "recycle_memory"
    assert pool.recycle_reason(make_slot(1, rss_bytes=99 * 2**20), policy) is None
    assert pool.recycle_reason(make_slot(1, jobs_done=99, retiring=True), policy) is None


def test_job_limits_are_spread_by_the_jitter() -> None:
    policy = RecyclePolicy(max_jobs=100, jitter=0.1)
    draws = {policy.draw_max_jobs(random.Random(seed)) for seed in range(50)}
    assert min(draws) >= 100 and max(draws) <= 110 and len(draws) > 1
    assert RecyclePolicy(max_jobs=0).draw_max_jobs() == 0


def test_a_worker_booting_past_its_deadline_is_overdue_once() -> None:
    slow = make_slot(1, SlotState.BOOTING)
    ready = make_slot(2, SlotState.IDLE)
    pool = pool_of(2, slow, ready)
    assert pool.boot_overdue(59.9) == []
    assert pool.boot_overdue(60.0) == [slow]
    assert pool.boot_overdue(61.0) == []
