"""The chaos suite's own rules: the run log, the attribution of extra runs,
the fault schedule and the figures (chaos/audit.py, chaos/schedule.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

from chaos import audit, schedule, workload
from chaos.cluster import render_config


def run(job: str, start: float, end: float | None, sup: str = "s1", pid: int = 10) -> audit.Run:
    return audit.Run(job, 3, pid, sup, start, end=end, outcome="ok" if end else "")


def test_the_run_log_pairs_starts_and_ends_per_process(tmp_path: Path) -> None:
    (tmp_path / "10.log").write_text(
        "S j1 3 10 s1 100.000 chaos.a i1 se1\n"
        "E j1 3 10 s1 100.500 ok\n"
        "S j2 3 10 s1 101.000 chaos.b i1 se2\n"  # killed: no end
    )
    (tmp_path / "11.log").write_text(
        "S j1 2 11 s2 102.000 chaos.a i1 se1\nE j1 2 11 s2 103.0 error\n"
    )
    runs = audit.read_runlog(tmp_path)
    assert [(r.job_id, r.pid, r.end, r.outcome) for r in runs] == [
        ("j1", 10, 100.5, "ok"),
        ("j2", 10, None, ""),
        ("j1", 11, 103.0, "error"),
    ]
    assert runs[0].job_type == "chaos.a" and runs[0].step_execution == "se1"


def test_an_extra_run_is_explained_by_a_fault_on_the_supervisor_that_ran_the_job() -> None:
    jobs = {"j": [run("j", 10, 11), run("j", 30, 31, sup="s2")]}
    fault = audit.Injection("kill_parent", "proc", "s1", 10.5, 12.0)
    other = audit.Injection("latency", "net", "s2", 10.5, 12.0)
    result = audit.attribute(jobs, {"j": 1}, [fault, other], tail=2.0)
    assert result.unexplained == []
    assert (fault.extra_runs, other.extra_runs) == (1, 0)
    assert fault.touched == {"j"} and other.touched == set()
    assert fault.recovery == 31 - 12.0


def test_an_extra_run_no_fault_explains_is_a_finding() -> None:
    jobs = {"j": [run("j", 10, 11), run("j", 30, 31)]}
    late = audit.Injection("kill_parent", "proc", "s1", 40, 41)  # after the rerun
    elsewhere = audit.Injection("kill_parent", "proc", "s2", 10, 12)
    result = audit.attribute(jobs, {"j": 1}, [late, elsewhere], tail=2.0)
    assert result.unexplained == [("j", 30)]
    assert result.extra == {"j": 1}


def test_planned_runs_are_not_extra() -> None:
    jobs = {"j": [run("j", 10, 11), run("j", 12, 13)]}  # a flaky first attempt
    result = audit.attribute(jobs, {"j": 2}, [], tail=2.0)
    assert result.unexplained == [] and result.extra == {}


def test_a_worker_kill_aims_at_its_pid_and_a_shared_fault_at_everyone() -> None:
    jobs = {"a": [run("a", 10, None, pid=7), run("a", 20, 21, pid=8)]}
    kill = audit.Injection("kill_busy_worker", "proc", "pid:7", 10.2, 10.2)
    assert audit.attribute(jobs, {"a": 1}, [kill], tail=0.0).unexplained == []
    restart = audit.Injection("broker_restart", "kafka", "*", 10.2, 15)
    assert audit.attribute(jobs, {"a": 1}, [restart], tail=0.0).unexplained == []


def test_per_class_figures_add_up() -> None:
    first = audit.Injection(
        "kill_parent", "proc: kill", "s1", 0, 1, touched={"a", "b"}, extra_runs=1
    )
    second = audit.Injection("kill_parent", "proc: kill", "s2", 5, 6, touched={"b"}, extra_runs=0)
    first.recovery, second.recovery = 4.0, 2.0
    (figures,) = audit.per_class([first, second])
    assert (figures.injected, figures.touched, figures.allowed, figures.seen) == (2, 2, 3, 1)
    assert (figures.p50, figures.worst) == (3.0, 4.0)
    # A fault that makes a Kafka member leave and come back moves its
    # partitions twice: each touched job may run twice more.
    (twice,) = audit.per_class([first, second], {"kill_parent": 2})
    assert twice.allowed == 6


def test_a_completion_is_lost_only_when_the_engine_lacks_it_and_it_mattered() -> None:
    jobs = {"a": [run("a", 1, 2)], "b": [run("b", 1, 2)], "c": [run("c", 1, 2)]}
    status = {"a": "COMPLETED", "b": "LOCKED", "c": "LOCKED"}
    assert audit.lost_completions(jobs, status, {"c": True}) == ["b"]


def test_rss_growth_is_measured_after_the_warm_up_of_long_lived_parents() -> None:
    samples = {1: [(0.0, 100), (10.0, 150), (50.0, 170), (60.0, 400)], 2: [(0.0, 1), (5.0, 999)]}
    assert audit.rss_growth(samples, warmup=20.0, min_life=40.0) == {1: 250}


def test_the_schedule_is_the_same_for_the_same_seed_and_keeps_lanes_apart() -> None:
    kinds = list(schedule.KINDS)
    first = schedule.draw(7, kinds, 2, 120.0, targets=["s1", "s2"], lease=8.0)
    again = schedule.draw(7, kinds, 2, 120.0, targets=["s1", "s2"], lease=8.0)
    assert [f.as_json() for f in first] == [f.as_json() for f in again]
    assert len(first) == 2 * len(kinds)
    for lane in {schedule.lane(f) for f in first}:
        mine = sorted((f for f in first if schedule.lane(f) == lane), key=lambda f: f.at)
        for before, after in itertools.pairwise(mine):
            assert after.at >= before.at + before.duration, lane
    assert schedule.draw(8, kinds, 2, 120.0, targets=["s1", "s2"], lease=8.0) != first


def test_local_only_and_network_faults_are_skipped_with_their_reason() -> None:
    chosen, skipped = schedule.kinds_for("poll", local_engine=False, network=False)
    assert set(schedule.LOCAL_ONLY) <= set(skipped)
    assert "latency" in skipped and "kill_parent" in chosen
    assert not set(schedule.KAFKA_ONLY) & set(chosen)


def test_the_plan_is_seeded_and_holds_every_mark() -> None:
    import random  # noqa: PLC0415

    plan = workload.plan(200, random.Random(1))
    assert {p.mode for p in plan} >= set(workload.MODE_WEIGHTS)
    assert [p.variables for p in plan] == [
        p.variables for p in workload.plan(200, random.Random(1))
    ]
    cancelled = next(p for p in plan if p.cancel)
    cancelled.cancelled = False  # it had finished first: its mode's status
    assert cancelled.expected_status() == "COMPLETED"
    cancelled.cancelled = True
    assert cancelled.expected_status() == "CANCELLED"
    failing = next(p for p in plan if p.mode == "fail")
    assert failing.expected_status() == "FAILED"
    # Its first attempt killed by a fault before it failed: the retry behaves.
    assert failing.expected_status(misbehaved=False) == "COMPLETED"


def test_an_older_sdk_gets_only_the_keys_it_knows() -> None:
    sections = {
        "engine": {"url": "http://e", "in_flight_window": 6.0},
        "kafka.config": {"client.id": "s1"},
    }
    text = render_config(sections, {"engine": {"url"}})
    assert "in_flight_window" not in text
    assert 'url = "http://e"' in text
    assert '"client.id" = "s1"' in text
