"""Checking an uploaded workflow definition and compiling it for the engine.

The rules are the contract's (400 on any of them); on top of those, features
the local engine does not implement are refused here with a reason that says
so, because a definition that uploads must behave as it would on the real
engine, never be silently simplified.
"""

from __future__ import annotations

import copy
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from workflow_sdk.testing import expressions

STEP_TYPES = frozenset(
    {
        "SERVICE_TASK",
        "USER_TASK",
        "DECISION",
        "TRANSFORMATION",
        "WAIT",
        "PARALLEL_GATEWAY",
        "JOIN_GATEWAY",
        "END",
    }
)
ID_PATTERN = re.compile(r"^[A-Za-z0-9_:\-]+$")
MAX_ID_LENGTH = 256
# A transformation value that is exactly "${name}" copies that variable.
_VARIABLE_REF = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}$")
# Step types a boundary timer can sit on: the ones an instance waits at.
TIMER_STEP_TYPES = frozenset({"SERVICE_TASK", "USER_TASK", "WAIT"})
# The durations the local engine runs: PT, then hours, minutes, seconds (any
# of them, in that order; seconds may have a fraction), as the engine's own
# scenarios write them (PT2S, PT8H, PT48H).
_SUPPORTED_DURATION = re.compile(r"^PT(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")
# Any ISO-8601 duration, to tell "unsupported here" from "not a duration".
_NUMBER = r"\d+(?:[.,]\d+)?"
_ISO_DURATION = re.compile(
    rf"^P(?=\d|T\d)(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$"
)

# Known fields and their JSON types ("str", "int", "bool", "object", "list").
_DEFINITION_FIELDS = {
    "id": "str",
    "name": "str",
    "description": "str",
    "steps": "list",
    "autoStartNextWorkflow": "bool",
    "nextWorkflowId": "str",
    "metadata": "object",
    "version": "int",
}
_STEP_FIELDS = {
    "id": "str",
    "name": "str",
    "type": "str",
    "description": "str",
    "nextStep": "str",
    "jobType": "str",
    "delegateClass": "str",
    "retryCount": "int",
    "conditionalNextSteps": "object",
    "transformations": "object",
    "parallelNextSteps": "list",
    "joinStep": "str",
    "boundaryEvents": "list",
}
_BOUNDARY_FIELDS = {
    "type": "str",
    "duration": "str",
    "interrupting": "bool",
    "targetStepId": "str",
}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "object": (dict,),
    "list": (list,),
}


class DefinitionError(Exception):
    """The definition is refused; ``str(exc)`` is the 400 answer's reason."""


@dataclass(frozen=True)
class Condition:
    source: str
    node: expressions.Node
    target: str


@dataclass(frozen=True)
class BoundaryTimer:
    """A TIMER boundary event: after ``seconds`` in its step, go to ``target``."""

    duration: str  # as written, for messages
    seconds: float
    interrupting: bool
    target: str


@dataclass(frozen=True)
class Step:
    id: str
    name: str
    type: str
    next_step: str | None = None
    job_type: str | None = None
    retry_count: int = 0
    conditions: tuple[Condition, ...] = ()
    transformations: tuple[tuple[str, Any], ...] = ()
    parallel_next_steps: tuple[str, ...] = ()
    join_step: str | None = None
    timers: tuple[BoundaryTimer, ...] = ()


@dataclass(frozen=True)
class CompiledDefinition:
    """A valid definition: ``document`` is what is stored and compared."""

    id: str
    name: str
    document: dict[str, Any]
    steps: dict[str, Step] = field(default_factory=dict)
    entry: str = ""
    next_workflow_id: str | None = None

    def canonical(self) -> str:
        """The stored JSON in one spelling, for "identical upload" checks."""
        return canonical_json(self.document)


def canonical_json(document: object) -> str:
    # Sorted keys: two uploads that differ only in key order are the same
    # definition. 1 and 1.0 stay different, as they are in the JSON text.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_fields(obj: dict[str, Any], known: dict[str, str], where: str) -> None:
    for key, value in obj.items():
        kind = known.get(key)
        if kind is None:
            raise DefinitionError(f'invalid definition: json: unknown field "{key}"')
        if value is None:
            continue  # JSON null is the zero value, as for an absent field
        allowed = _JSON_TYPES[kind]
        wrong = not isinstance(value, allowed) or (kind == "int" and isinstance(value, bool))
        if wrong:
            raise DefinitionError(
                f"invalid definition: {where}.{key} must be a JSON {_describe(kind)}, "
                f"got {json.dumps(value)[:60]}"
            )


def _describe(kind: str) -> str:
    return {
        "str": "string",
        "int": "integer",
        "bool": "boolean",
        "object": "object",
        "list": "array",
    }[kind]


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _unsupported(what: str) -> DefinitionError:
    return DefinitionError(
        f"the local engine does not support {what}; test this definition against a real engine"
    )


def _compile_conditions(raw: dict[str, Any], step_id: str) -> tuple[Condition, ...]:
    out: list[Condition] = []
    for source, target in raw.items():
        if not isinstance(target, str) or not target:
            raise DefinitionError(
                f"invalid definition: step {step_id!r}: conditionalNextSteps values "
                "must be step ids"
            )
        try:
            node = expressions.parse(source)
        except expressions.ExpressionError as exc:
            raise _unsupported(
                f"the condition {source!r} of step {step_id!r} ({exc}); it supports "
                "#variable, 'string', number, true/false/null literals, == != < <= > >=, "
                "&&, ||, ! and parentheses"
            ) from exc
        out.append(Condition(source, node, target))
    return tuple(out)


def _compile_transformations(raw: dict[str, Any], step_id: str) -> tuple[tuple[str, Any], ...]:
    for key, value in raw.items():
        if isinstance(value, str) and "${" in value and not _VARIABLE_REF.match(value):
            raise _unsupported(
                f"the transformation {key!r}: {value!r} of step {step_id!r} (only literal "
                "values and strings that are exactly ${variableName})"
            )
    return tuple(raw.items())


def variable_reference(value: object) -> str | None:
    """The variable name when a transformation value is exactly ``${name}``."""
    if isinstance(value, str):
        match = _VARIABLE_REF.match(value)
        if match:
            return match.group(1)
    return None


def duration_seconds(text: str) -> float | None:
    """Seconds of a ``PT[nH][nM][n[.n]S]`` duration; None for any other text."""
    match = _SUPPORTED_DURATION.match(text)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600.0 + int(minutes or 0) * 60.0 + float(seconds or 0)


def _compile_timers(raw: object, step_id: str, step_type: str) -> tuple[BoundaryTimer, ...]:
    where = f"invalid definition: step {step_id!r}: boundary event"
    timers: list[BoundaryTimer] = []
    for event in raw if isinstance(raw, list) else []:
        if not isinstance(event, dict):
            raise DefinitionError(
                f"invalid definition: step {step_id!r}: boundaryEvents must be objects"
            )
        _check_fields(event, _BOUNDARY_FIELDS, f"step {step_id!r}.boundaryEvents")
        event_type = event.get("type")
        if event_type != "TIMER":
            raise _unsupported(f"boundary events of type {event_type!r} (step {step_id!r})")
        if step_type not in TIMER_STEP_TYPES:
            raise _unsupported(
                f"a boundary timer on a {step_type} step (step {step_id!r}; it runs them on "
                f"{', '.join(sorted(TIMER_STEP_TYPES))})"
            )
        duration = _optional_str(event, "duration")
        if duration is None:
            raise DefinitionError(f"{where}: duration is required")
        seconds = duration_seconds(duration)
        if seconds is None and _ISO_DURATION.match(duration):
            raise _unsupported(
                f"the timer duration {duration!r} (step {step_id!r}; it supports PTnH, PTnM "
                "and PTnS, combined as in PT1H30M, seconds may have a fraction as in PT0.5S)"
            )
        if seconds is None:
            raise DefinitionError(
                f"{where}: duration {duration[:60]!r} is not an ISO-8601 duration such as PT30S"
            )
        target = _optional_str(event, "targetStepId")
        if target is None:
            raise DefinitionError(f"{where}: targetStepId is required")
        timers.append(BoundaryTimer(duration, seconds, event.get("interrupting") is True, target))
    return tuple(timers)


def _compile_step(raw: object, index: int) -> Step:
    if not isinstance(raw, dict):
        raise DefinitionError(f"invalid definition: steps[{index}] must be a JSON object")
    _check_fields(raw, _STEP_FIELDS, f"steps[{index}]")
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not step_id:
        raise DefinitionError(f"invalid definition: steps[{index}].id is required")
    if not _optional_str(raw, "name"):
        raise DefinitionError(f"invalid definition: step {step_id!r}: name is required")
    step_type = raw.get("type")
    if step_type not in STEP_TYPES:
        raise DefinitionError(
            f"invalid definition: step {step_id!r}: unknown type {step_type!r} "
            f"(one of {', '.join(sorted(STEP_TYPES))})"
        )
    if _optional_str(raw, "delegateClass"):
        raise _unsupported(f"delegateClass (step {step_id!r})")
    timers = _compile_timers(raw.get("boundaryEvents") or [], step_id, step_type)

    next_step = _optional_str(raw, "nextStep")
    job_type = _optional_str(raw, "jobType")
    retry_count = raw.get("retryCount") or 0
    if retry_count < 0:
        raise DefinitionError(f"invalid definition: step {step_id!r}: retryCount must be >= 0")
    raw_conditions = raw.get("conditionalNextSteps") or {}
    parallel = raw.get("parallelNextSteps") or []
    if not all(isinstance(p, str) and p for p in parallel):
        raise DefinitionError(
            f"invalid definition: step {step_id!r}: parallelNextSteps must be step ids"
        )
    join_step = _optional_str(raw, "joinStep")

    if step_type == "SERVICE_TASK" and not job_type:
        raise DefinitionError(f"invalid definition: step {step_id!r}: SERVICE_TASK needs jobType")
    if step_type in ("TRANSFORMATION", "WAIT", "JOIN_GATEWAY") and not next_step:
        raise DefinitionError(f"invalid definition: step {step_id!r}: {step_type} needs nextStep")
    if step_type == "DECISION" and not raw_conditions:
        raise DefinitionError(
            f"invalid definition: step {step_id!r}: DECISION needs conditionalNextSteps"
        )
    if step_type == "PARALLEL_GATEWAY" and (len(parallel) < 2 or not join_step):
        raise DefinitionError(
            f"invalid definition: step {step_id!r}: PARALLEL_GATEWAY needs at least two "
            "parallelNextSteps and a joinStep"
        )
    if step_type == "USER_TASK" and not job_type:
        # Used internally only: a GET returns the document as uploaded, as
        # the real engine does, so the stored JSON is left without it.
        job_type = step_id

    # Conditions route DECISIONs, and tasks that have no nextStep.
    routes_by_condition = step_type == "DECISION" or (
        step_type in ("SERVICE_TASK", "USER_TASK") and not next_step
    )
    conditions = _compile_conditions(raw_conditions, step_id) if routes_by_condition else ()
    transformations = (
        _compile_transformations(raw.get("transformations") or {}, step_id)
        if step_type == "TRANSFORMATION"
        else ()
    )
    return Step(
        id=step_id,
        name=raw["name"],
        type=step_type,
        next_step=next_step,
        job_type=job_type,
        retry_count=retry_count,
        conditions=conditions,
        transformations=transformations,
        parallel_next_steps=tuple(parallel) if step_type == "PARALLEL_GATEWAY" else (),
        join_step=join_step if step_type == "PARALLEL_GATEWAY" else None,
        timers=timers,
    )


def _successors(step: Step) -> list[str]:
    out: list[str] = []
    if step.next_step:
        out.append(step.next_step)
    out.extend(c.target for c in step.conditions)
    out.extend(step.parallel_next_steps)
    if step.join_step:
        out.append(step.join_step)
    out.extend(timer.target for timer in step.timers)  # a timer's path counts too
    return out


def _check_graph(steps: dict[str, Step], entry: str) -> None:
    for step in steps.values():
        for timer in step.timers:
            if timer.target not in steps:
                raise DefinitionError(
                    f"invalid definition: step {step.id!r}: the boundary timer's "
                    f"targetStepId {timer.target!r} is not a step of this definition"
                )
        for target in _successors(step):
            if target not in steps:
                raise DefinitionError(
                    f"invalid definition: step {step.id!r} points to {target!r}, "
                    "which is not a step of this definition"
                )
        join = steps[step.join_step] if step.join_step is not None else None
        if join is not None and join.type != "JOIN_GATEWAY":
            raise _unsupported(
                f"a joinStep that is not a JOIN_GATEWAY (step {step.id!r}: {join.id!r})"
            )
    seen = {entry}
    queue = deque([entry])
    while queue:
        for target in _successors(steps[queue.popleft()]):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    unreachable = [step_id for step_id in steps if step_id not in seen]
    if unreachable:
        raise DefinitionError(
            f"invalid definition: steps not reachable from the first step "
            f"{entry!r}: {', '.join(unreachable)}"
        )
    if not any(steps[s].type == "END" for s in seen):
        raise DefinitionError("invalid definition: no END step is reachable")


def compile_definition(raw: object) -> CompiledDefinition:
    """Check an uploaded definition; raises ``DefinitionError`` (a 400) when refused."""
    if not isinstance(raw, dict):
        raise DefinitionError("invalid definition: the body must be a JSON object")
    document = copy.deepcopy(raw)
    _check_fields(document, _DEFINITION_FIELDS, "definition")
    definition_id = document.get("id")
    if not isinstance(definition_id, str) or not definition_id:
        raise DefinitionError("invalid definition: id is required")
    if len(definition_id) > MAX_ID_LENGTH or not ID_PATTERN.match(definition_id):
        raise DefinitionError(
            f"invalid definition: id {definition_id[:80]!r} must match "
            f"{ID_PATTERN.pattern} and have at most {MAX_ID_LENGTH} characters"
        )
    if not _optional_str(document, "name"):
        raise DefinitionError("invalid definition: name is required")
    raw_steps = document.get("steps") or []
    if not raw_steps:
        raise DefinitionError("invalid definition: at least one step is required")
    steps: dict[str, Step] = {}
    for index, raw_step in enumerate(raw_steps):
        step = _compile_step(raw_step, index)
        if step.id in steps:
            raise DefinitionError(f"invalid definition: duplicate step id {step.id!r}")
        steps[step.id] = step
    entry = next(iter(steps))
    _check_graph(steps, entry)

    next_workflow_id = _optional_str(document, "nextWorkflowId")
    chained = document.get("autoStartNextWorkflow") is True
    if chained and not next_workflow_id:
        raise DefinitionError("invalid definition: autoStartNextWorkflow needs nextWorkflowId")
    return CompiledDefinition(
        id=definition_id,
        name=document["name"],
        document=document,
        steps=steps,
        entry=entry,
        next_workflow_id=next_workflow_id if chained else None,
    )


__all__ = [
    "STEP_TYPES",
    "TIMER_STEP_TYPES",
    "BoundaryTimer",
    "CompiledDefinition",
    "Condition",
    "DefinitionError",
    "Step",
    "canonical_json",
    "compile_definition",
    "duration_seconds",
    "variable_reference",
]
