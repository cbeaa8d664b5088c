"""The Kafka comparison's figures: aggregation over runs, goals and the table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchlib.bench_table import verdict_lines
from benchlib.scenarios import latency_summary
from benchlib.stats import spread

if TYPE_CHECKING:
    from benchlib.kafka_bench import Result

POLL = "poll"
KAFKA = "kafka"
MODES = (POLL, KAFKA)


def aggregate(repeats: list[dict[str, Result]]) -> dict[str, Any]:
    def runs(label: str, pick: Any) -> list[float]:
        return [float(pick(r[label])) for r in repeats]

    def latency(label: str, attr: str) -> dict[str, Any]:
        per_run = [latency_summary(getattr(r[label], attr)) for r in repeats]
        per_run = [p for p in per_run if p]
        return {q: spread([p[q] for p in per_run]) for q in ("p50", "p99")} if per_run else {}

    out: dict[str, Any] = {}
    for kind in ("noop", "cpu"):
        entry: dict[str, Any] = {}
        for mode in MODES:
            label = f"{kind}-{mode}"
            entry[mode] = {
                "jobs_per_s": spread(runs(label, lambda r: r.rate)),
                "parent_cpu_ms_per_job": spread(runs(label, lambda r: r.parent_cpu_ms_per_job)),
                "parent_cpu_pct": spread(runs(label, lambda r: r.parent_cpu_pct)),
                "engine_cpu_pct": spread(runs(label, lambda r: r.engine_cpu_pct)),
                "broker_cpu_pct": spread(runs(label, lambda r: r.broker_cpu_pct)),
                "machine_cpu_pct": spread(runs(label, lambda r: r.machine_cpu_pct)),
                "foreign_cpu_pct": spread(runs(label, lambda r: r.foreign_cpu_pct)),
                "source_to_handler_ms": latency(label, "source_to_handler_ms"),
                "worker_gap_ms": latency(label, "worker_gap_ms"),
            }
        pairs = list(zip(_by(repeats, kind, KAFKA), _by(repeats, kind, POLL), strict=True))
        entry["ratio_jobs_per_s"] = spread([_divide(k.rate, p.rate) for k, p in pairs])
        entry["ratio_parent_cpu_per_job"] = spread(
            [_divide(k.parent_cpu_ms_per_job, p.parent_cpu_ms_per_job) for k, p in pairs]
        )
        out[kind] = entry
    open_loop: dict[str, Any] = {}
    for mode in MODES:
        label = f"open-loop-{mode}"
        open_loop[mode] = {
            "created_to_handler_ms": latency(label, "created_to_handler_ms"),
            "source_to_handler_ms": latency(label, "source_to_handler_ms"),
            "idle_parent_cpu_pct": spread(
                [idle for r in repeats if (idle := r[label].idle_parent_cpu_pct) is not None]
            ),
            "parent_cpu_ms_per_job": spread(runs(label, lambda r: r.parent_cpu_ms_per_job)),
        }
    out["open_loop"] = open_loop
    return out


def _by(repeats: list[dict[str, Result]], kind: str, mode: str) -> list[Result]:
    return [r[f"{kind}-{mode}"] for r in repeats]


@dataclass(frozen=True)
class Goal:
    name: str
    path: tuple[str, ...]
    op: str
    target: float


GOALS = (
    Goal("no-op jobs/s kafka/poll", ("noop", "ratio_jobs_per_s"), ">=", 1.0),
    Goal("CPU-bound jobs/s kafka/poll", ("cpu", "ratio_jobs_per_s"), ">=", 1.0),
    # "The same parent CPU per job": within a tenth.
    Goal("no-op parent CPU/job kafka/poll", ("noop", "ratio_parent_cpu_per_job"), "<=", 1.1),
    Goal("CPU-bound parent CPU/job kafka/poll", ("cpu", "ratio_parent_cpu_per_job"), "<=", 1.1),
)


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    judged = []
    for goal in GOALS:
        node: Any = results
        for part in goal.path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        value = node.get("median") if isinstance(node, dict) else None
        met = None
        if isinstance(value, (int, float)) and math.isfinite(value):
            met = value >= goal.target if goal.op == ">=" else value <= goal.target
        judged.append(
            {"goal": f"{goal.name} {goal.op} {goal.target:g}", "value": value, "met": met}
        )
    return judged


def _fmt(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat or stat.get("median") is None:
        return "n/a"
    if len(stat.get("runs", [])) <= 1:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"


def _divide(a: float, b: float) -> float:
    """a / b, or NaN where it means nothing: a tiny smoke batch can measure
    no parent CPU at all (psutil's clock ticks are 10 ms)."""
    if not b or not math.isfinite(a) or not math.isfinite(b):
        return math.nan
    return a / b


def _ratio(kafka: dict[str, Any] | None, poll: dict[str, Any] | None) -> str:
    k, p = (kafka or {}).get("median"), (poll or {}).get("median")
    if not isinstance(k, (int, float)) or not isinstance(p, (int, float)) or not p:
        return "n/a"
    return f"{k / p:.2f}"


def table(report: dict[str, Any]) -> str:
    st, r = report["settings"], report["results"]
    rows: list[tuple[str, str, str, str]] = []

    def row(
        label: str, poll: dict[str, Any] | None, kafka: dict[str, Any] | None, digits: int = 1
    ) -> None:
        rows.append((label, _fmt(poll, digits), _fmt(kafka, digits), _ratio(kafka, poll)))

    def quantiles(label: str, key: str, poll: dict[str, Any], kafka: dict[str, Any]) -> None:
        for q in ("p50", "p99"):
            row(f"{label} {q}, ms", poll[key].get(q), kafka[key].get(q), 2)

    for kind, title in (
        ("noop", f"no-op x {st['noop_jobs']}"),
        ("cpu", f"CPU-bound {st['cpu_ms']:g} ms x {st['jobs']}"),
    ):
        p, k = r[kind][POLL], r[kind][KAFKA]
        row(f"{title}: jobs/s", p["jobs_per_s"], k["jobs_per_s"])
        row(
            f"{title}: parent CPU per job, ms",
            p["parent_cpu_ms_per_job"],
            k["parent_cpu_ms_per_job"],
            3,
        )
        row(f"{title}: parent CPU, % of a core", p["parent_cpu_pct"], k["parent_cpu_pct"])
        quantiles(f"{title}: source -> handler", "source_to_handler_ms", p, k)
        quantiles(f"{title}: worker idle between two jobs", "worker_gap_ms", p, k)
        row(f"{title}: engine CPU, %", p["engine_cpu_pct"], k["engine_cpu_pct"])
        rows.append((f"{title}: broker CPU, %", "-", _fmt(k["broker_cpu_pct"]), ""))
        row(f"{title}: other processes' CPU, %", p["foreign_cpu_pct"], k["foreign_cpu_pct"])
    op, ok = r["open_loop"][POLL], r["open_loop"][KAFKA]
    title = f"open loop, no-op at {st['open_loop_rate']:g}/s x {st['open_loop_jobs']}"
    quantiles(f"{title}: created -> handler", "created_to_handler_ms", op, ok)
    quantiles(f"{title}: source -> handler", "source_to_handler_ms", op, ok)
    row(
        f"idle parent CPU ({st['idle_seconds']:g} s, ready workers), % of a core",
        op["idle_parent_cpu_pct"],
        ok["idle_parent_cpu_pct"],
        2,
    )
    width = max(len(x[0]) for x in rows)
    lines = [
        f"Kafka dispatch vs poll: {st['workers']} workers, {st['partitions']} partitions per "
        f"topic, median [min-max] of {st['repeat']} run(s); broker {report['broker']}",
        "",
        f"| {'measure':<{width}} | poll | kafka | kafka/poll |",
        f"|{'-' * (width + 2)}|------|-------|------------|",
    ]
    lines += [f"| {a:<{width}} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        "source -> handler: the poll answer (poll) or the Kafka fetch (kafka) handed the decoded",
        "  jobs to the supervisor's source thread -> the handler's first line in a worker.",
        "created -> handler: just before POST /v1/instances -> the handler's first line",
        "  (poll mode waits poll_interval after an empty poll; kafka adds relay, broker, fetch).",
        "parent CPU per job: the supervisor process's CPU (all threads, librdkafka's too) in the",
        "  steady window / jobs completed in it. The broker runs on this machine too.",
    ]
    lines += verdict_lines(report, "Goals (issue 13):")
    return "\n".join(lines)


def finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
