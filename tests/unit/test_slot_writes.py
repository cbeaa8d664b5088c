"""A worker slot is the only writer of its state.

Two halves that together leave no other way in: every public attribute of
``WorkerSlot`` is a read-only property over a private slot field (so writing
one from outside fails, for mypy and at run time), and no module of the
supervisor but ``loop/slots.py`` writes one of those private fields (read
from the source with ``ast``: assignments, augmented assignments, deletes
and ``setattr``).
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
PUBLIC = sorted(
    name
    for name, value in vars(WorkerSlot).items()
    if isinstance(value, property) and not name.startswith("_")
)


def written_attributes(path: Path) -> list[tuple[int, str, str]]:
    """(line, receiver, attribute) of every attribute write in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            found.append((node.lineno, ast.unparse(node.args[0]), str(node.args[1].value)))
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute):
                    found.append((sub.lineno, ast.unparse(sub.value), sub.attr))
    return found


def test_every_public_field_of_a_slot_is_read_only() -> None:
    assert {"state", "job", "jobs_done", "retiring", "exit_reason", "kill_at"} <= set(PUBLIC)
    assert all(vars(WorkerSlot)[name].fset is None for name in PUBLIC)
    assert all(field.startswith("_") for field in WorkerSlot.__slots__)
    slot = make_slot(1)
    for name in PUBLIC:
        with pytest.raises(AttributeError):
            setattr(slot, name, getattr(slot, name))
    with pytest.raises(AttributeError):
        slot.anything_else = 1  # type: ignore[attr-defined]


def test_no_module_but_slots_writes_a_slots_fields() -> None:
    private = set(WorkerSlot.__slots__)
    writes = []
    for path in sorted(SUPERVISOR.rglob("*.py")):
        if path == SLOTS:
            continue
        for line, receiver, attribute in written_attributes(path):
            # Another class may have a field of the same name: its own
            # (``self.``) writes are not a slot's.
            if attribute in private and receiver != "self":
                writes.append(f"{path.relative_to(SUPERVISOR)}:{line}: {receiver}.{attribute}")
    assert writes == []


def test_the_check_sees_a_write_from_outside(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("slot._state = 1\nsetattr(slot, '_job', None)\nself._state = 2\n")
    assert sorted(written_attributes(sample)) == [
        (1, "slot", "_state"),
        (2, "slot", "_job"),
        (3, "self", "_state"),
    ]


def test_slots_own_methods_change_it() -> None:
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
