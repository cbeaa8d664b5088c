"""Turns the ``handlers`` import strings of the config into one registry."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from workflow_sdk.errors import ConfigError
from workflow_sdk.handler.registry import HandlerRegistry

#: Attribute looked up when an import string names only a module.
DEFAULT_ATTRIBUTE = "registry"


def _names_a_prefix(missing: str, module_name: str) -> bool:
    """True when ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def _resolve(spec: str) -> HandlerRegistry:
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or DEFAULT_ATTRIBUTE
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The module itself (or its package) is missing: a typo or a path
        # problem, said in one line. A module missing *inside* the handler
        # code propagates with its traceback, like any other import error.
        if exc.name is None or not _names_a_prefix(exc.name, module_name):
            raise
        raise ConfigError(
            f"supervisor.handlers: {spec!r}: no module named {exc.name!r} "
            "(searched the current directory and sys.path, which $PYTHONPATH extends)"
        ) from None
    try:
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise ConfigError(
            f"supervisor.handlers: {spec!r}: module {module_name} has no {attribute!r}"
        ) from None
    if not isinstance(target, HandlerRegistry) and callable(target):
        target = target()  # a factory function returning a registry
    if not isinstance(target, HandlerRegistry):
        raise ConfigError(
            f"supervisor.handlers: {spec!r} is a {type(target).__name__}, not a HandlerRegistry "
            "(or a function returning one)"
        )
    return target


def load_registry(specs: Iterable[str], base: HandlerRegistry | None = None) -> HandlerRegistry:
    """Import every ``module[:attribute]`` and merge their registries.

    Import errors propagate unchanged (the worker reports them with the
    traceback). A job type registered by two different specs is refused:
    which one would win is not obvious to a reader of the config.
    """
    merged = HandlerRegistry()
    origin: dict[str, str] = {}
    sources: list[tuple[str, HandlerRegistry]] = []
    if base is not None:
        sources.append(("the registry passed to Supervisor", base))
    sources.extend((spec, _resolve(spec)) for spec in specs)
    for name, registry in sources:
        for job_type in registry.job_types():
            if job_type in origin and origin[job_type] != name:
                raise ConfigError(
                    f"supervisor.handlers: job type {job_type!r} is registered by both "
                    f"{origin[job_type]!r} and {name!r}"
                )
            origin[job_type] = name
            handler = registry.get(job_type)
            if handler is not None:
                merged.register(job_type, handler)
    return merged


__all__ = ["load_registry"]
