"""The lower bounds of pyproject.toml are tested, not only written (issue 21 item 12).

Runs ``scripts/min_deps.py``: the unit tier in a throwaway venv holding
exactly the lowest allowed versions (Python 3.10 when there is one). Needs
the package index; skipped with the script's message when it is unreachable.
About a minute: smoke tier, not the fast path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "min_deps.py"
EXIT_UNREACHABLE = 3


def test_the_pinned_minimums_are_the_documented_ones() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import min_deps  # noqa: PLC0415 - scripts/ is not a package
    finally:
        sys.path.remove(str(SCRIPT.parent))
    pins = min_deps.minimum_pins()
    for floor in ("requests==2.32.4", "urllib3==2.6.3", "protobuf==4.25.8"):
        assert floor in pins, pins


@pytest.mark.timeout(1200)
def test_the_unit_tier_passes_on_the_lowest_allowed_versions() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "-x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    if result.returncode == EXIT_UNREACHABLE:
        pytest.skip(f"package index unreachable: {result.stderr.strip()[-300:]}")
    tail = (result.stdout + result.stderr)[-3000:]
    assert result.returncode == 0, tail
    assert "requests==2.32.4" in result.stdout and "urllib3==2.6.3" in result.stdout
    assert " passed" in result.stdout
