"""The Prometheus alerting rules (deploy/prometheus/): promtool accepts them,
their unit tests pass (each alert fires where it should and stays quiet
close by), every alert is tested, and every alert's runbook link points at
a section of docs/operations.md.

promtool is built once from the Go module proxy into the user's cache by
scripts/promtool.py (scripts/test does it before pytest); without Go the
promtool tests skip and say so."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "rochallor-supervisor.rules.yml"
RULE_TESTS = RULES_DIR / "rochallor-supervisor.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def _load_promtool_script() -> ModuleType:
    # scripts/ is not a package: load the one build recipe by path.
    spec = importlib.util.spec_from_file_location(
        "rochallor_promtool_script", ROOT / "scripts" / "promtool.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


promtool_script = _load_promtool_script()


@pytest.fixture(scope="module")
def promtool() -> Path:
    cached = promtool_script.promtool_path()
    if not cached.is_file() and shutil.which("go") is None:
        pytest.skip(
            "promtool tests skipped: Go is not on PATH to build promtool "
            "(apt-get install golang, or the toolchain from go.dev; then "
            "python3 scripts/promtool.py --path builds it once)"
        )
    try:
        # Instant once built; scripts/test builds it before pytest runs.
        path: Path = promtool_script.promtool()
    except promtool_script.ToolError as exc:
        pytest.skip(f"promtool tests skipped: {exc}")
    return path


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
