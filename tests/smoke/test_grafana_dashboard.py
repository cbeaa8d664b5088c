"""The Grafana dashboard (deploy/grafana/) is importable as it stands: one
Prometheus data source variable that every panel and query uses, unique
panel ids, panels that do not overlap, and queries that Prometheus parses
(promtool, with Grafana's variables filled in). That the queries name real
metrics is checked against running supervisors: tests/process/test_dashboard.py
(poll mode) and tests/kafka/test_dashboard_kafka.py (Kafka mode)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ops_kit import DASHBOARD, metric_names, panel_queries, panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: What Grafana puts in place of its variables, for promtool to parse.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$job_type": ".*",
    "$instance": ".*",
    "$job": ".*",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_one_prometheus_datasource_variable_drives_every_panel() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "job_type"):
        assert variables[name]["datasource"] == DATASOURCE, name
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            # Every query is narrowed to the chosen job and instances.
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_dashboard_covers_what_operators_watch() -> None:
    """The families issue 19 asks for each appear in some panel's query."""
    used = set().union(*(metric_names(expr) for _, expr in panel_queries()))
    wanted = {
        "workflow_sdk_jobs_completed_total",
        "workflow_sdk_handler_latency_seconds_bucket",
        "workflow_supervisor_workers",
        "workflow_supervisor_workers_busy",
        "workflow_supervisor_jobs_held",
        "workflow_sdk_report_retries_total",
        "workflow_sdk_reports_given_up_total",
        "workflow_sdk_stale_jobs_total",
        "workflow_sdk_lease_renewals_total",
        "workflow_supervisor_worker_restarts_total",
        "workflow_supervisor_worker_rss_bytes",
        "workflow_supervisor_kafka_jobs_in_flight",
        "workflow_supervisor_kafka_offsets_pending",
        "workflow_supervisor_kafka_partitions_held_back",
    }
    assert wanted <= used, wanted - used


@pytest.mark.timeout(1800)  # the promtool fixture may build it first
def test_every_query_parses_as_promql(promtool: Path, tmp_path: Path) -> None:
    """Each query, Grafana's variables filled in, as a recording rule that
    ``promtool check rules`` parses."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    queries = panel_queries()
    for number, (_title, query) in enumerate(queries):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        lines.append(f"      - record: dashboard:query_{number}")
        lines.append(f"        expr: {json.dumps(expr)}")
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [str(promtool), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout, result.stdout
