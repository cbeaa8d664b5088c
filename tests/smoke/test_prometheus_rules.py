"""The Prometheus alerting rules (deploy/prometheus/): promtool accepts them,
their unit tests pass (each alert fires where it should and stays quiet
close by), every alert is tested, and every alert's runbook link points at
a section of docs/operations.md.

promtool comes from the ``promtool`` fixture (tests/smoke/conftest.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "rochallor-supervisor.rules.yml"
RULE_TESTS = RULES_DIR / "rochallor-supervisor.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)", RULES.read_text(), flags=re.MULTILINE)


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(1800)  # the first build, if scripts/test did not do it
def test_promtool_check_rules_accepts_the_rules(promtool: Path) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout, result.stdout


@pytest.mark.timeout(1800)
def test_promtool_test_rules_passes_the_unit_tests(promtool: Path) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """A case firing it (``exp_alerts:`` with an entry) and one where it
    stays quiet (``exp_alerts: []``), read from the test file's text."""
    text = RULE_TESTS.read_text()
    checks = re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:(.*)", text)
    firing = {name for name, rest in checks if rest.strip() != "[]"}
    quiet = {name for name, rest in checks if rest.strip() == "[]"}
    names = alert_names()
    assert names, "no alert found in the rules file"
    assert len(names) == len(set(names)), names
    assert set(names) <= firing, set(names) - firing
    assert set(names) <= quiet, set(names) - quiet
    assert firing | quiet <= set(names), "a unit test names an alert that does not exist"


def test_every_alert_is_explained_in_docs_operations() -> None:
    """Each alert's runbook annotation names a heading of docs/operations.md."""
    headings = {
        line.lstrip("#").strip().lower()
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    rules = RULES.read_text()
    for name in alert_names():
        assert name.lower() in headings, f"docs/operations.md has no section {name}"
        assert f'runbook: "docs/operations.md#{name.lower()}"' in rules, name
