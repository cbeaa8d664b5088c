"""Smoke-tier fixtures: promtool, built once from the Go module proxy into the
user's cache by scripts/promtool.py (scripts/test does it before pytest);
without Go the tests that need it skip and say so."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="session")
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
