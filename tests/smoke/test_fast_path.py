"""``scripts/test --fast`` runs the unit and contract tiers only: every test of
the other tiers carries the ``slow`` marker (``tests/conftest.py`` marks them
by directory, whatever a file remembers), so ``-m "not slow"`` leaves none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_fast_path_collects_the_unit_and_contract_tiers_only() -> None:
    fast = collected("-m", "not slow")
    tiers = {node.split("/")[1] for node in fast}
    assert tiers == {"unit", "contract"}, tiers


def test_every_test_of_the_slow_tiers_is_marked_slow() -> None:
    slow = collected("-m", "slow")
    every = collected("tests/process", "tests/e2e", "tests/kafka", "tests/smoke")
    assert slow and set(every) <= set(slow)
