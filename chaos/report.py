"""Tables and JSON of a chaos run.

Per dispatch mode: one row per fault class (injected; jobs touched; extra
runs allowed / seen; time to recover p50 / max, in seconds: from the end of
an injection to the end of the last run of the jobs it touched), the handler
marks (planned misbehaviour: instances, runs planned / seen), the faults
skipped and why, and the must-be-zero figures. The JSON holds the same and
the list of injections.
"""

from __future__ import annotations

from typing import Any


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out = [line, "-" * len(line)]
    for row in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return out


def render(results: list[Any], seed: int) -> tuple[str, dict[str, Any], bool]:
    """(the text, the JSON document, whether a must-be-zero figure is not zero)."""
    lines: list[str] = []
    document: dict[str, Any] = {"seed": seed, "modes": []}
    failed = False
    for result in results:
        lines.append("")
        lines.append(
            f"== {result.dispatch} mode: seed {result.seed}, {result.instances} instances, "
            f"{result.jobs} jobs, {result.runs} handler runs, {result.seconds:.0f} s"
        )
        rows = [
            [
                c.fault_class,
                str(c.injected),
                str(c.touched),
                f"{c.allowed} / {c.seen}",
                f"{_seconds(c.p50)} / {_seconds(c.worst)}",
            ]
            for c in result.classes
        ]
        lines.extend(
            _table(
                [
                    "fault class",
                    "injected",
                    "jobs touched",
                    "extra runs allowed / seen",
                    "recover p50 / max s",
                ],
                rows,
            )
        )
        if result.marks:
            lines.append("")
            mark_rows = [
                [name, str(m["instances"]), f"{m['runs_planned']} / {m['runs_seen']}"]
                for name, m in sorted(result.marks.items())
            ]
            lines.extend(
                _table(["handler mark", "instances", "marked job runs planned / seen"], mark_rows)
            )
        for kind, why in sorted(result.skipped_kinds.items()):
            lines.append(f"not injected: {kind}: {why}")
        for skip in result.skipped:
            lines.append(
                f"skipped at its moment: {skip['kind']} on {skip['target']} ({skip['why']})"
            )
        lines.append("")
        lines.append("must be zero:")
        for name, items in result.zero.items():
            mark = "ok" if not items else "FAIL"
            failed = failed or bool(items)
            lines.append(f"  {len(items):5d}  {name}  [{mark}]")
            for item in items[:10]:
                lines.append(f"         {item}")
            if len(items) > 10:
                lines.append(f"         ... and {len(items) - 10} more")
        for key, value in result.info.items():
            lines.append(f"  info: {key}: {value}")
        document["modes"].append(
            {
                "dispatch": result.dispatch,
                "seed": result.seed,
                "instances": result.instances,
                "jobs": result.jobs,
                "runs": result.runs,
                "seconds": round(result.seconds, 1),
                "classes": [
                    {
                        "class": c.fault_class,
                        "injected": c.injected,
                        "jobs_touched": c.touched,
                        "extra_runs_allowed": c.allowed,
                        "extra_runs_seen": c.seen,
                        "recover_p50_s": c.p50,
                        "recover_max_s": c.worst,
                    }
                    for c in result.classes
                ],
                "handler_marks": result.marks,
                "must_be_zero": {name: len(items) for name, items in result.zero.items()},
                "findings": {name: items for name, items in result.zero.items() if items},
                "not_injected": result.skipped_kinds,
                "skipped": result.skipped,
                "faults": result.faults,
                "injections": [
                    {
                        "kind": i.kind,
                        "class": i.fault_class,
                        "target": i.target,
                        "start": round(i.start, 3),
                        "end": round(i.end, 3),
                        "detail": i.detail,
                        "jobs_touched": len(i.touched),
                        "extra_runs": i.extra_runs,
                        "recovery_s": i.recovery,
                    }
                    for i in result.injections
                ],
                "info": result.info,
            }
        )
    lines.append("")
    lines.append(
        f"seed {seed}: "
        + ("a must-be-zero figure is not zero" if failed else "every must-be-zero figure is zero")
    )
    document["failed"] = failed
    return "\n".join(lines), document, failed
