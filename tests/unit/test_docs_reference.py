"""The documentation's reference pages cover the code they are generated from.

``docs/_gen/reference.py`` reads the configuration parser's tables, the
metric registry, the argument parsers and the signal and exit-status tables
when the site is built. These tests enumerate the same things another way
(the config dataclasses, a freshly collected registry, a walk of the
parsers) and fail when one has no entry in the generated model or page: a
key, a metric or an option the site would not show. They also fail when a
hand-written page names a metric that does not exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from prometheus_client import CollectorRegistry

from workflow_sdk.errors import ConfigError
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.supervisor import config as config_module
from workflow_sdk.supervisor.config import SupervisorConfig, parse_config
from workflow_sdk.supervisor.exposition.exporter import PoolCollector, WorkerView
from workflow_sdk.supervisor.exposition.stats import SupervisorStats

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "_gen" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


reference = load_reference()


# -- configuration -------------------------------------------------------------------


def section_name(field: str) -> str:
    return 'job_types."<type>"' if field == "job_types" else field


def test_every_config_field_has_an_entry() -> None:
    """Each field of each section's dataclass (what the parser fills)."""
    documented = {key.dotted for key in reference.config_model()}
    defaults = SupervisorConfig()
    sections = {
        f.name: f for f in dataclasses.fields(SupervisorConfig) if f.name not in ("source",)
    }
    for name in ("engine", "supervisor", "logging", "metrics", "kafka"):
        for field in dataclasses.fields(getattr(defaults, name)):
            assert f"{name}.{field.name}" in documented, f"{name}.{field.name}"
    for field in dataclasses.fields(config_module.JobTypeConfig):
        assert f'job_types."<type>".{field.name}' in documented, field.name
    assert {"warnings", "secret_env", "job_types"} < set(sections)


def test_every_parser_table_is_read() -> None:
    """A new ``_Spec`` table (a new section) must be added to the generator."""
    read = {id(table) for _, table, _ in reference._config_sections()}
    for name, table in reference.spec_tables().items():
        assert id(table) in read, f"config.{name} is not in docs/_gen/reference.py"
        for key in table:
            assert any(k.name == key for k in reference.config_model()), key


def test_every_documented_key_is_accepted() -> None:
    """No entry for a key the parser would refuse as unknown."""
    samples = {
        "a string": "x",
        "a number": 1.0,
        "an integer": 1,
        "true or false": True,
        "a list of strings": ["x"],
        "a table of strings": {"SOME_VARIABLE": "x"},
        'a list of strings or one comma-separated string ("k1:9092,k2:9092")': ["k1:9092"],
    }
    for key in reference.config_model():
        if key.section == "kafka" and key.name in ("config", "config_env"):
            continue
        value = samples[key.kind]
        if key.section.startswith("job_types"):
            data = {"job_types": {"some-type": {key.name: value}}}
        else:
            data = {key.section: {key.name: value}}
        try:
            parse_config(data, environ={})
        except ConfigError as exc:
            assert "unknown" not in str(exc), (key.dotted, str(exc))


def test_every_key_says_what_it_is_and_accepts() -> None:
    for key in reference.config_model():
        assert key.description, f"{key.dotted}: no comment above it in supervisor.toml.example"
        spec = dict(
            (name, s)
            for _, table, _ in reference._config_sections()
            for name, s in table.items()
            if _ == key.section
        ).get(key.name)
        if spec is not None and spec.check is not None:
            assert key.allowed, f"{key.dotted}: no probe value makes its check speak"


def test_reload_behaviour_follows_reload_py() -> None:
    from workflow_sdk.supervisor import reload  # noqa: PLC0415

    keys = {key.dotted: key for key in reference.config_model()}
    for name in reload.RESTART_KEYS:
        assert keys[f"supervisor.{name}"].restart, name
    assert not keys["supervisor.workers"].restart
    assert all(keys[k].restart for k in keys if k.startswith(reload.RESTART_SECTIONS))


def test_config_page_shows_every_key() -> None:
    page = reference.render_config(reference.config_model())
    for key in reference.config_model():
        assert f"### `{key.dotted}` {{ #{key.anchor} }}" in page, key.dotted
    assert "must" not in page.split("### ")[0], "constraints keep the parser's 'must be'"


def test_descriptions_come_from_the_comment_above() -> None:
    text = """
[supervisor]
# Worker processes.
# workers = 4
# Recycling, shared.
max_jobs_per_child = 0
max_jobs_jitter = 0.1

# [job_types."render"]
# Seconds a job may run.
# timeout = 20.0
"""
    found = reference.example_descriptions(text)
    assert found["supervisor.workers"] == "Worker processes."
    assert found["supervisor.max_jobs_jitter"] == "Recycling, shared."
    assert found['job_types."<type>".timeout'] == "Seconds a job may run."


# -- metrics -------------------------------------------------------------------------


def exposed(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def registry_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels), collected from the code's own registries."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.backlog_gauges()
    # Touch every labelled SDK metric so that its labels show in a sample.
    metrics.observe_poll(0.1, 0)
    metrics.observe_handler("t", 0.1)
    metrics.job_finished("t", "success")
    metrics.retry("t")
    metrics.stale_job("t", "instance_cancelled")
    metrics.report_retry("t")
    metrics.report_given_up("t", "lost")
    metrics.lease_renewal("accepted")
    found: dict[str, tuple[str, set[str]]] = {}
    for family in registry.collect():
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        found[exposed(family.name, family.type)] = (family.type, labels)
    worker = WorkerView(slot=0, pid=os.getpid(), busy=True, ps=psutil.Process())
    collector = PoolCollector(SupervisorStats(), lambda: (worker,), kafka=SourceStats)
    for family in collector.collect():
        labels = {k for s in family.samples for k in s.labels}
        found[exposed(family.name, family.type)] = (family.type, labels)
    return found


def test_every_metric_has_an_entry() -> None:
    model = {m.name: m for m in reference.metrics_model()}
    collected = registry_metrics()
    assert set(collected) == set(model)
    for name, (kind, labels) in collected.items():
        assert model[name].kind == kind, name
        assert set(model[name].labels) == labels, name
    page = "".join(
        reference.render_metrics(model.values(), origin)
        for origin in ("sdk", "supervisor", "kafka")
    )
    for name in collected:
        assert f"`{name}`\n:   " in page, name


def test_kafka_metrics_are_marked_as_kafka_only() -> None:
    model = reference.metrics_model()
    kafka = {m.name for m in model if m.origin == "kafka"}
    assert kafka and all(name.startswith("workflow_supervisor_kafka_") for name in kafka)
    assert not any(
        m.name.startswith("workflow_supervisor_kafka_") for m in model if m.origin != "kafka"
    )


def doc_pages() -> list[Path]:
    return [
        *sorted(p for p in DOCS.rglob("*.md") if "_gen" not in p.parts),
        ROOT / "README.md",
    ]


def test_pages_name_only_real_metrics() -> None:
    """A metric renamed or removed in the code must not live on in a page."""
    names = {m.name for m in reference.metrics_model()}
    for page in doc_pages():
        for found in re.findall(
            r"\bworkflow_(?:sdk|supervisor)_[a-z0-9_]*[a-z0-9]\b", page.read_text()
        ):
            base = re.sub(r"_(bucket|sum|count)$", "", found)
            # A family written without its counter suffix (`..._total` is implied).
            assert found in names or base in names or f"{found}_total" in names, (
                f"{page.relative_to(ROOT)} names {found}, which /metrics does not show"
            )


# -- the command line ----------------------------------------------------------------


def walk(parser: argparse.ArgumentParser, name: str) -> dict[str, set[str]]:
    found = {name: {flag for a in parser._actions for flag in a.option_strings}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                found.update(walk(subparser, f"{name} {sub}"))
    return found


def test_every_cli_option_has_an_entry() -> None:
    from workflow_sdk.supervisor import cli  # noqa: PLC0415
    from workflow_sdk.testing.__main__ import build_parser  # noqa: PLC0415

    expected = walk(cli._parser(), cli.PROG)
    expected[f"{cli.PROG} local-engine"] = walk(build_parser(), "x")["x"]
    model = {c.name: c for c in reference.cli_model()}
    assert set(expected) <= set(model)
    page = reference.render_cli(model.values())
    for command, flags in expected.items():
        documented = {flag for option in model[command].options for flag in option.flags}
        assert flags == documented, command
        section = page.split(f"## `{command}`\n", 1)[1].split("\n## ", 1)[0]
        for flag in flags - {"-h", "--help"}:
            assert f"`{flag}`" in section, (command, flag)


# -- signals and exit statuses -----------------------------------------------------------


def test_signal_pages_list_every_handled_signal() -> None:
    from workflow_sdk.supervisor.loop.signals import HANDLED_SIGNALS  # noqa: PLC0415

    table = reference.render_signals()
    children = reference.render_children_signals()
    for signum in HANDLED_SIGNALS:
        name = signum.name
        assert f"`{name}`" in table, name
        assert f"| `{name}` |" in children, name


def test_reference_markers_are_known_and_used() -> None:
    used: set[str] = set()
    for page in doc_pages():
        # Markers quoted in code (contributing.md shows the syntax) are not markers.
        text = re.sub(r"`[^`\n]*`", "", page.read_text())
        used.update(reference.MARKER.findall(text))
    assert used == set(reference.SECTIONS), "a generated section no page shows, or a typo"
    with pytest.raises(KeyError, match="unknown reference section"):
        reference.expand("<!-- reference: no-such-thing -->", "page.md")


def test_every_public_name_of_the_api_page_has_its_docstrings() -> None:
    """docs/api.md's sections name the public API; python-api.md renders each."""
    api = (DOCS / "api.md").read_text()
    rendered = set(re.findall(r"^::: ([\w.]+)", (DOCS / "python-api.md").read_text(), re.M))
    names = [
        name
        for heading in re.findall(r"^## (.+)$", api, re.M)
        for name in re.findall(r"`([\w.]+)`", heading)
    ]
    assert len(names) >= 6
    for name in names:
        assert name in rendered, f"{name} is in docs/api.md but not in docs/python-api.md"
