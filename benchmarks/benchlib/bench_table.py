"""The table ``benchmarks/bench`` prints (and ``--table-from`` reprints) from its JSON report."""

from __future__ import annotations

from typing import Any

from benchlib.stats import spread


def fmt(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat or stat.get("median") is None:
        return "n/a"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    if len(stat.get("runs", [])) <= 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def table(report: dict[str, Any]) -> str:
    m, st, r = report["machine"], report["settings"], report["results"]
    n = st["workers"]
    cpu, noop, lat = r["cpu_bound"], r["noop"], r["dispatch_latency_ms"]
    rows: list[tuple[str, str]] = []

    def section(title: str) -> None:
        rows.append((f"**{title}**", ""))

    section(f"CPU-bound jobs ({st['cpu_ms']:g} ms of pure-Python CPU each), jobs/s")
    rows += [
        (f"supervisor, {n} workers", fmt(cpu["supervisor"])),
        (f"threaded Runner, {st['runner_threads']} threads", fmt(cpu["runner"])),
        ("supervisor, 1 worker", fmt(cpu["supervisor_one_worker"])),
        ("supervisor / Runner", fmt(cpu["ratio_supervisor_runner"], 2)),
        (f"supervisor / ({n} x one worker)", fmt(cpu["ratio_scaling"], 2)),
    ]
    section("No-op jobs, jobs/s")
    rows += [
        (f"supervisor, {n} workers", fmt(noop["supervisor"])),
        (f"threaded Runner, {st['runner_threads']} threads", fmt(noop["runner"])),
        ("supervisor / Runner", fmt(noop["ratio_supervisor_runner"], 2)),
    ]
    section(f"Supervisor dispatch latency, ms ({n} workers, CPU-bound jobs)")
    for kind, label in (
        ("poll_answer_to_handler", "job ready (polled, worker free) -> handler's first line"),
        ("claim_to_handler", "engine claim (lockedAt) -> handler's first line"),
    ):
        rows.append((f"{label}, p50", fmt(lat[kind].get("p50"), 2)))
        rows.append((f"{label}, p99", fmt(lat[kind].get("p99"), 2)))
    rows.append(("jobs per non-empty poll", fmt(r["jobs_per_nonempty_poll"], 2)))
    idle_gaps = r["worker_idle_between_jobs_ms"]
    for key, label in (("cpu_supervisor", f"{n} workers"), ("cpu_supervisor_1", "1 worker")):
        rows.append(
            (
                f"worker idle between two jobs ({label}), p50 / p99",
                f"{fmt(idle_gaps[key]['p50'], 2)} / {fmt(idle_gaps[key]['p99'], 2)}",
            )
        )
    section("CPU, % of one core")
    pc, ec, mc = r["parent_cpu_pct"], r["engine_cpu_pct"], r["machine_cpu_pct"]
    per_job = r.get("parent_cpu_ms_per_job", {})  # absent from files of older runs
    rows += [
        (f"supervisor parent, idle ({st['idle_seconds']:g} s, no jobs)", fmt(pc["idle"], 2)),
        ("supervisor parent, busy (CPU-bound)", fmt(pc["busy_cpu_bound"])),
        ("supervisor parent, busy (no-op)", fmt(pc["busy_noop"])),
        ("supervisor parent CPU per job, ms (CPU-bound / no-op)",
         f"{fmt(per_job.get('cpu_bound'), 2)} / {fmt(per_job.get('noop'), 2)}"),
        ("engine process, CPU-bound supervisor / Runner run",
         f"{fmt(ec['cpu_bound_supervisor'])} / {fmt(ec['cpu_bound_runner'])}"),
        ("engine process, no-op supervisor / Runner run",
         f"{fmt(ec['noop_supervisor'])} / {fmt(ec['noop_runner'])}"),
        (f"whole machine ({m['usable_cpus']} CPUs = {100 * m['usable_cpus']}%), "
         "CPU-bound supervisor / Runner run",
         f"{fmt(mc['cpu_bound_supervisor'])} / {fmt(mc['cpu_bound_runner'])}"),
    ]  # fmt: skip
    foreign = [batch["max"] for batch in r["foreign_cpu_pct"].values()]
    rows.append(("other processes during the batches, worst batch", fmt(spread([max(foreign)]))))
    section("Memory, MiB (end of the CPU-bound run): RSS / USS")
    mem = r["memory_mib"]

    def mem_row(label: str, stat: dict[str, Any] | None) -> None:
        if stat:
            rows.append((label, f"{fmt(stat['rss_mib'])} / {fmt(stat['uss_mib'])}"))

    mem_row("supervisor parent", mem["supervisor_parent"])
    mem_row("fork server", mem["fork_server"])
    for i, worker in enumerate(mem["workers"], 1):
        mem_row(f"worker {i}", worker)
    mem_row(f"threaded Runner process ({st['runner_threads']} threads)", mem["runner_process"])
    section("Local engine")
    rows.append(
        (
            "capacity, poll+complete cycles/s (4 client threads)",
            fmt(r["engine_capacity_cycles_per_s"]),
        )
    )
    slow = r.get("slow_engine")
    if slow:
        section("Slow engine (50 ms per completion, 5 s lease, no-op jobs)")
        rows += [
            ("jobs claimed twice (worst run)", str(slow["claimed_twice"])),
            (
                f"jobs held at most (bound 2 x {n} workers = {slow['held_bound']})",
                str(slow["held_at_most"]),
            ),
            ("throughput, jobs/s", fmt(slow["jobs_per_s"])),
        ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"Machine: {m['usable_cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"{m['implementation']} {m['python']}, {m['platform']}",
        f"Runs: median [min-max] of {st['repeat']}; {st['jobs']} CPU-bound jobs and "
        f"{st['noop_jobs']} no-op jobs per batch; one fresh local engine process per batch.",
        "",
        f"| {'measure':<{width}} | value |",
        f"|{'-' * (width + 2)}|-------|",
    ]
    lines += [f"| {label:<{width}} | {value} |" for label, value in rows]
    lines += verdict_lines(report, "Goals:")
    return "\n".join(lines)


def verdict_lines(report: dict[str, Any], title: str) -> list[str]:
    """The smoke-run warning, then one line per goal: met, MISSED or n/a."""
    lines: list[str] = []
    if report["settings"]["jobs"] < 100:
        lines += ["", "(a smoke-sized run: the figures say nothing about performance)"]
    lines += ["", title]
    for goal in report["goals"]:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[goal["met"]]
        value = "n/a" if goal["value"] is None else f"{goal['value']:.3g}"
        lines.append(f"  [{verdict}] {goal['goal']}: {value}")
    return lines
