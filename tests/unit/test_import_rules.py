"""The supervisor's folders keep their import rules (each ``__init__`` states its own).

Read from the source with ``ast``, not by importing it: every import
statement counts, inside functions and ``TYPE_CHECKING`` blocks too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import workflow_sdk.supervisor

SUPERVISOR = Path(workflow_sdk.supervisor.__file__).resolve().parent
PACKAGE = "workflow_sdk.supervisor"

#: Folder -> the supervisor modules (prefixes) its modules may import.
ALLOWED = {
    "worker": (
        f"{PACKAGE}.worker",
        f"{PACKAGE}.exposition.logs",
        f"{PACKAGE}.exposition.titles",
        f"{PACKAGE}.exposition.multiproc",
    ),
    "io": (f"{PACKAGE}.io", f"{PACKAGE}.config"),
    "exposition": (f"{PACKAGE}.exposition", f"{PACKAGE}.config", f"{PACKAGE}.checks"),
}
#: Folder -> supervisor modules it may not import (everything else is allowed).
FORBIDDEN = {"loop": (f"{PACKAGE}.cli",)}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``path``; ``from X import y`` gives
    ``X.y`` (``y`` may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(SUPERVISOR.parent.parent).with_suffix("").parts
                base = ".".join(parts[: len(parts) - node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(folder: str) -> list[str]:
    found = []
    for path in sorted((SUPERVISOR / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if not within(module, (PACKAGE,)):
                continue
            if folder in ALLOWED:
                bad = not within(module, ALLOWED[folder])
            else:
                bad = within(module, FORBIDDEN[folder])
            if bad:
                found.append(f"{path.relative_to(SUPERVISOR)}:{line}: {module}")
    return found


@pytest.mark.parametrize("folder", sorted({*ALLOWED, *FORBIDDEN}))
def test_each_folder_imports_only_what_its_init_allows(folder: str) -> None:
    assert (SUPERVISOR / folder / "__init__.py").exists()
    assert violations(folder) == []


def test_the_rule_sees_an_import_of_the_parents_side() -> None:
    """The check itself: a worker module importing the loop is caught."""
    sample = SUPERVISOR / "worker" / "main.py"
    lines = list(imported_modules(sample))
    assert any(m.startswith(f"{PACKAGE}.worker.") for _, m in lines)
    assert not within(f"{PACKAGE}.loop.ledger.JobLedger", ALLOWED["worker"])
    assert not within(PACKAGE, ALLOWED["worker"])  # the package's __init__ imports the loop
    assert within(f"{PACKAGE}.exposition.logs.configure_logging", ALLOWED["worker"])


def test_every_supervisor_module_lives_in_a_folder_or_is_a_known_top_module() -> None:
    top = {p.stem for p in SUPERVISOR.glob("*.py")}
    assert top <= {
        "__init__",
        "__main__",
        "cli",
        "config",
        "checks",
        "clients",
        "reload",
        "security",
    }, "a new module at the top: put it in loop/, io/, worker/ or exposition/"


def test_no_test_file_imports_another_test_file() -> None:
    """Shared helpers live in helper modules (``unit/fakes.py``,
    ``runner_support.py``, ``process/process_support.py``...), never in a
    test file another one imports (its tests would run twice, and a change
    to one test file would break another)."""
    tests = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted(tests.rglob("*.py")):
        for line, module in imported_modules_of(path):
            if any(part.startswith("test_") for part in module.split(".")[:-1]):
                found.append(f"{path.relative_to(tests)}:{line}: {module}")
    assert found == []


def imported_modules_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module.name) for the absolute and relative imports of a test file."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, f"{alias.name}.x"
