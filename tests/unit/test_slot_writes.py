"""A worker slot is the only writer of its state.

Three checks that together leave no other way in: every field of a
``WorkerSlot`` refuses assignment and deletion at run time; mypy sees the
fields as read-only properties (``scripts/lint`` fails on a write; the
declarations are checked here against ``__slots__``); and no module of the
supervisor but ``loop/slots.py`` bypasses the refusal with
``object.__setattr__`` or ``setattr`` (read from the source with ``ast``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import workflow_sdk.supervisor
from unit.fakes import make_slot
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

SUPERVISOR = Path(workflow_sdk.supervisor.__file__).resolve().parent
SLOTS = SUPERVISOR / "loop" / "slots.py"
FIELDS = set(WorkerSlot.__slots__)


def bypasses(path: Path) -> list[tuple[int, str]]:
    """(line, call) of every ``object.__setattr__``, ``setattr`` or
    ``object.__delattr__`` / ``delattr`` call in ``path``, of every alias of
    one (``x = object.__setattr__``), and of an import of slots.py's ``_set``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and any(a.name == "_set" for a in node.names):
            found.append((node.lineno, f"from {node.module} import _set"))
        if isinstance(node, (ast.Call, ast.Assign)):
            target = node.func if isinstance(node, ast.Call) else node.value
            text = ast.unparse(target)
            if text in {"object.__setattr__", "setattr", "object.__delattr__", "delattr"}:
                found.append((node.lineno, text))
    return found


def typed_fields() -> set[str]:
    """The fields declared (for mypy) as read-only properties in slots.py."""
    tree = ast.parse(SLOTS.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WorkerSlot"]
    (block,) = [n for n in cls.body if isinstance(n, ast.If)]  # if TYPE_CHECKING:
    assert ast.unparse(block.test) == "TYPE_CHECKING"
    declared = set()
    for node in block.body:
        assert isinstance(node, ast.FunctionDef)
        assert [ast.unparse(d) for d in node.decorator_list] == ["property"], node.name
        declared.add(node.name)
    return declared


def test_no_field_of_a_slot_can_be_assigned_or_deleted() -> None:
    assert {"state", "job", "jobs_done", "retiring", "exit_reason", "kill_at"} <= FIELDS
    slot = make_slot(1)
    for name in sorted(FIELDS):
        with pytest.raises(AttributeError, match="only through the slot's own methods"):
            setattr(slot, name, getattr(slot, name))
        with pytest.raises(AttributeError):
            delattr(slot, name)
    with pytest.raises(AttributeError):
        slot.anything_else = 1  # type: ignore[attr-defined]


def test_mypy_sees_every_field_as_a_read_only_property() -> None:
    assert typed_fields() == FIELDS


def test_no_module_but_slots_bypasses_the_refusal() -> None:
    found = []
    for path in sorted(SUPERVISOR.rglob("*.py")):
        if path != SLOTS:
            found += [
                f"{path.relative_to(SUPERVISOR)}:{line}: {call}" for line, call in bypasses(path)
            ]
    assert found == []


def test_the_check_sees_a_bypass(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("object.__setattr__(slot, 'state', 1)\nw = object.__setattr__\nx = 1\n")
    assert sorted(bypasses(sample)) == [(1, "object.__setattr__"), (2, "object.__setattr__")]
    assert bypasses(SLOTS), "slots.py itself writes that way"


def test_the_slots_own_methods_change_it() -> None:
    slot = make_slot(1, SlotState.BOOTING)
    slot.booted(("a",))
    assert (slot.state, slot.job_types) == (SlotState.IDLE, frozenset({"a"}))
    slot.retire("scale", 10.0)
    assert (slot.state, slot.retiring, slot.exit_reason, slot.conn.closed) == (
        SlotState.STOPPING,
        True,
        "scale",
        True,
    )
