#!/usr/bin/env python3
"""The unit tier against the lowest versions pyproject.toml allows.

    .venv/bin/python scripts/min_deps.py [--python PYTHON] [pytest args...]

Reads the lower bounds (``name>=X``) of ``[project] dependencies`` and of
the ``kafka`` extra, installs exactly those versions (``name==X``, markers
kept) with pytest into a throwaway virtual environment, the project itself
without its dependencies, and runs ``tests/unit`` there. The lower bounds are
documented as tested: this is the test.

The interpreter is Python 3.10 (the oldest supported, and the one the oldest
wheels exist for) when one is found on PATH or under pyenv, else ``--python``
or this interpreter. Slow (a minute of installs): not part of
``scripts/test``'s run; ``tests/smoke/test_min_deps.py`` runs it.

Exit status: the tests' (0 passed), 2 bad usage, 3 the package index could
not be reached (nothing was tested), 4 the pinned versions do not install
together.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the script may run under 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXIT_UNREACHABLE = 3
EXIT_UNINSTALLABLE = 4
#: What the unit tier needs besides the project (their newest versions).
TEST_TOOLS = ("pytest", "pytest-timeout", "responses", "hypothesis")
_LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*(;.*)?$")


def minimum_pins(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """``name==X[; marker]`` for every ``name>=X`` of the runtime and kafka dependencies."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["kafka"]]
    pins = []
    for requirement in requirements:
        found = _LOWER_BOUND.match(requirement)
        if found is None:
            raise SystemExit(f"min_deps: no lower bound to pin in {requirement!r}")
        name, version, marker = found.groups()
        pins.append(f"{name}=={version}{marker or ''}")
    return pins


def find_python(given: str | None) -> str:
    if given:
        return given
    candidates = [shutil.which("python3.10") or ""]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        candidates += sorted(
            glob.glob(os.path.join(root.stdout.strip(), "versions/3.10.*/bin/python3.10"))
        )
    for candidate in filter(None, candidates):
        works = subprocess.run([candidate, "--version"], capture_output=True, check=False)
        if works.returncode == 0:
            return candidate
    return sys.executable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="interpreter of the throwaway venv (default: 3.10)")
    args, pytest_args = parser.parse_known_args(argv)
    pins = minimum_pins()
    python = find_python(args.python)
    with tempfile.TemporaryDirectory(prefix="rochallor-min-deps-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        # One pinned package fetched first: a failure there is the index, not the pins.
        probe = subprocess.run(
            [*pip, "download", "--no-deps", "--dest", tmp, "--quiet", pins[0].split(";")[0]],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if probe.returncode != 0:
            print(f"min_deps: the package index is unreachable:\n{probe.stderr}", file=sys.stderr)
            return EXIT_UNREACHABLE
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        install = subprocess.run(
            [*pip, "install", "--quiet", "-c", str(constraints), *pins, *TEST_TOOLS],
            check=False,
        )
        if install.returncode != 0:
            print("min_deps: the lower bounds do not install together", file=sys.stderr)
            return EXIT_UNINSTALLABLE
        subprocess.run([*pip, "install", "--quiet", "--no-deps", str(ROOT)], check=True)
        versions = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True)
        print(f"min_deps: {python}, pinned: {', '.join(p.split(';')[0] for p in pins)}")
        print(versions.stdout, end="", flush=True)
        # From the repository root (its tests and conftest), importing the
        # installed project: the venv's own site-packages, not src/.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        tests = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pytest", "tests/unit", "-q", "-p",
             "no:cacheprovider", *pytest_args],
            cwd=ROOT,
            env=env,
            check=False,
        )  # fmt: skip
        return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
