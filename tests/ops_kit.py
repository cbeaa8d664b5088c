"""Helpers for the tests of the operations kit in deploy/: the Grafana
dashboard's queries, the metric names they use, and the names a supervisor
exposes (scraped) or declares (registered, but shown only once recorded)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from workflow_sdk.metrics.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "rochallor-supervisor.json"
RULES = ROOT / "deploy" / "prometheus" / "rochallor-supervisor.rules.yml"

#: A metric of this project in a PromQL expression (label names and values,
#: functions and keywords never start like this).
METRIC_NAME = re.compile(r"\bworkflow_(?:sdk|supervisor)_[a-z_]+\b")

#: Sample names a metric family of each type exposes in the text format.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """``(panel title, PromQL expression)`` for every target of every panel."""
    dashboard = json.loads(path.read_text())
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((str(panel.get("title")), str(target["expr"])))
    return found


def metric_names(expression: str) -> set[str]:
    return set(METRIC_NAME.findall(expression))


def scraped_names(exposition: str) -> set[str]:
    """The sample names of a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def declared_sdk_names() -> set[str]:
    """The sample names of every ``workflow_sdk_*`` metric the SDK registers,
    as exposed: a labelled counter shows no sample until something is counted
    with its labels, so it can be missing from a scrape yet be real."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.backlog_gauges()  # created on first use
    names = set()
    for family in registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


#: Families the dashboard uses that a short healthy run does not record.
EVENT_ONLY = {
    "workflow_sdk_stale_jobs_total",
    "workflow_sdk_report_retries_total",
    "workflow_sdk_reports_given_up_total",
    "workflow_sdk_lease_renewals_total",
}


def check_dashboard_names(exposition: str, *, kafka: bool) -> None:
    """Every metric of every panel's query is in ``exposition`` (Kafka ones
    only when ``kafka``), or is an ``EVENT_ONLY`` name the SDK declares."""
    scraped = scraped_names(exposition)
    declared = declared_sdk_names()
    used: set[str] = set()
    missing = []
    for title, expr in panel_queries():
        for name in sorted(metric_names(expr)):
            used.add(name)
            if name.startswith("workflow_supervisor_kafka_") and not kafka:
                continue
            if name in scraped:
                continue
            if name in EVENT_ONLY and name in declared:
                continue
            missing.append(f"{title!r}: {name}")
    assert not missing, "dashboard queries metrics the supervisor does not expose:\n" + (
        "\n".join(missing) + "\nscraped:\n" + "\n".join(sorted(scraped))
    )
    # EVENT_ONLY stays honest: each is used, and still not in a plain run.
    assert used >= EVENT_ONLY, EVENT_ONLY - used
    assert not (EVENT_ONLY & scraped), EVENT_ONLY & scraped
