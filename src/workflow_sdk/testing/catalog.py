"""The local engine's uploaded definitions, every version of each.

Caller holds ``EngineState.lock``: one lock guards the whole engine, so an
instance never starts from a definition that is half stored.
"""

from __future__ import annotations

from workflow_sdk.testing.definitions import CompiledDefinition
from workflow_sdk.testing.records import Definition, now


class Catalog:
    """Definitions by id; versions number from 1 in upload order."""

    def __init__(self) -> None:
        self._versions: dict[str, list[Definition]] = {}

    def add(self, compiled: CompiledDefinition, canonical: str) -> tuple[Definition, bool]:
        """Store ``compiled`` as its id's next version; returns it and whether
        it is new. A document whose ``canonical`` form equals a stored
        version's is that version: uploads are idempotent. (The caller
        computes ``canonical`` before it takes the lock.)"""
        versions = self._versions.setdefault(compiled.id, [])
        for stored in versions:
            if stored.canonical == canonical:
                return stored, False
        definition = Definition(compiled, len(versions) + 1, now(), canonical)
        versions.append(definition)
        return definition, True

    def find(self, definition_id: str, version: int | None = None) -> Definition | None:
        """The given version, or the latest when ``version`` is None."""
        versions = self._versions.get(definition_id) or []
        if version is None:
            return versions[-1] if versions else None
        return versions[version - 1] if 1 <= version <= len(versions) else None

    def latest_matching(self, keyword: str) -> list[Definition]:
        """The latest version of each definition whose id or name contains
        ``keyword`` (case-insensitive), by id."""
        needle = keyword.lower()
        latest = [versions[-1] for _, versions in sorted(self._versions.items())]
        return [
            d
            for d in latest
            if needle in d.compiled.id.lower() or needle in d.compiled.name.lower()
        ]

    def clear(self) -> None:
        self._versions.clear()
