"""Validation and compilation of definitions by the local engine."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.testing.definitions import (
    BoundaryTimer,
    DefinitionError,
    canonical_json,
    compile_definition,
    duration_seconds,
    variable_reference,
)


def _def(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "d-1", "name": "D", "steps": list(steps), **extra}


def _svc(step_id: str, next_step: str | None = "end", **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"id": step_id, "name": step_id, "type": "SERVICE_TASK", "jobType": "t"}
    if next_step:
        step["nextStep"] = next_step
    return {**step, **extra}


END = {"id": "end", "name": "End", "type": "END"}


def _timer(duration: str, target: str = "end", interrupting: bool = True) -> dict[str, Any]:
    return {"type": "TIMER", "duration": duration, "interrupting": interrupting,
            "targetStepId": target}  # fmt: skip


def test_a_valid_definition_compiles() -> None:
    compiled = compile_definition(
        _def(
            _svc("a", "route", retryCount=2),
            {
                "id": "route",
                "name": "Route",
                "type": "DECISION",
                "conditionalNextSteps": {"#x == 1": "end", "#x != 1": "review"},
            },
            {"id": "review", "name": "Review", "type": "USER_TASK", "nextStep": "end"},
            END,
            description="d",
            metadata={"k": [1]},
        )
    )
    assert compiled.id == "d-1"
    assert compiled.entry == "a"
    assert compiled.steps["a"].retry_count == 2
    assert [c.target for c in compiled.steps["route"].conditions] == ["end", "review"]
    # A USER_TASK without jobType gets its step id, used internally only:
    # the stored document stays as uploaded (a GET shows no jobType).
    assert compiled.steps["review"].job_type == "review"
    assert "jobType" not in compiled.document["steps"][2]
    assert compiled.next_workflow_id is None


def test_the_input_is_not_changed() -> None:
    raw = _def({"id": "u", "name": "U", "type": "USER_TASK", "nextStep": "end"}, END)
    compile_definition(raw)
    assert "jobType" not in raw["steps"][0]


def test_canonical_json_ignores_key_order_but_not_number_spelling() -> None:
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})
    assert canonical_json({"a": 1}) != canonical_json({"a": 1.0})


def test_chaining_is_compiled() -> None:
    compiled = compile_definition(
        _def(_svc("a"), END, autoStartNextWorkflow=True, nextWorkflowId="next-1")
    )
    assert compiled.next_workflow_id == "next-1"
    not_chained = compile_definition(_def(_svc("a"), END, nextWorkflowId="next-1"))
    assert not_chained.next_workflow_id is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "JSON object"),
        (_def(_svc("a", None, next="end"), END), 'unknown field "next"'),
        (_def(_svc("a"), END, extra=1), 'unknown field "extra"'),
        ({"id": "d", "steps": [_svc("a"), END]}, "name is required"),
        (_def({"id": "a", "type": "END"}), "name is required"),
        ({"name": "D", "steps": [END]}, "id is required"),
        (_def(END, id="has space"), "must match"),
        (_def(END, id="x" * 257), "must match"),
        (_def(), "at least one step"),
        (_def(_svc("a"), END, {**END}), "duplicate step id"),
        (_def(_svc("a", "nowhere"), END), "not a step of this definition"),
        (_def(_svc("a"), END, _svc("orphan")), "not reachable"),
        (_def(_svc("a", "b"), _svc("b", "a")), "no END step is reachable"),
        (_def({"id": "a", "name": "A", "type": "SERVICE_TASK", "nextStep": "end"}, END), "jobType"),
        (_def({"id": "a", "name": "A", "type": "WAIT"}, END), "WAIT needs nextStep"),
        (_def({"id": "a", "name": "A", "type": "TRANSFORMATION"}, END), "needs nextStep"),
        (_def({"id": "a", "name": "A", "type": "DECISION"}, END), "conditionalNextSteps"),
        (_def({"id": "a", "name": "A", "type": "LOOP", "nextStep": "end"}, END), "unknown type"),
        (_def(_svc("a", retryCount=-1), END), "retryCount"),
        (_def(_svc("a", retryCount="3"), END), "must be a JSON integer"),
        (_def(_svc("a", retryCount=True), END), "must be a JSON integer"),
        (_def(_svc("a"), END, name=5), "must be a JSON string"),
        (_def(_svc("a"), END, autoStartNextWorkflow=True), "needs nextWorkflowId"),
        (
            _def(
                {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY",
                 "parallelNextSteps": ["a"], "joinStep": "j"},
                _svc("a", "j"),
                {"id": "j", "name": "J", "type": "JOIN_GATEWAY", "nextStep": "end"},
                END,
            ),
            "at least two",
        ),
    ],
)  # fmt: skip
def test_invalid_definitions(raw: Any, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        compile_definition(raw)


@pytest.mark.parametrize(
    ("step", "what"),
    [
        (
            _svc("a", boundaryEvents=[{"type": "MESSAGE", "duration": "PT1S",
                                       "targetStepId": "end"}]),
            "boundary events of type 'MESSAGE'",
        ),
        (
            {"id": "a", "name": "A", "type": "TRANSFORMATION", "nextStep": "end",
             "boundaryEvents": [_timer("PT1S")]},
            "a boundary timer on a TRANSFORMATION step",
        ),
        (_svc("a", boundaryEvents=[_timer("P1D")]), "the timer duration 'P1D'"),
        (_svc("a", boundaryEvents=[_timer("PT1.5M")]), "the timer duration 'PT1.5M'"),
        (_svc("a", boundaryEvents=[_timer("P1Y2M")]), "the timer duration 'P1Y2M'"),
        (_svc("a", delegateClass="x.Y"), "delegateClass"),
        (
            {"id": "a", "name": "A", "type": "DECISION",
             "conditionalNextSteps": {"#x * 2 > 1": "end"}},
            "the condition",
        ),
        (
            {"id": "a", "name": "A", "type": "TRANSFORMATION", "nextStep": "end",
             "transformations": {"y": "${x + 1}"}},
            "the transformation",
        ),
        (
            {"id": "a", "name": "A", "type": "TRANSFORMATION", "nextStep": "end",
             "transformations": {"y": "Hello ${x}"}},
            "the transformation",
        ),
    ],
)  # fmt: skip
def test_unsupported_features_are_refused_not_ignored(step: dict[str, Any], what: str) -> None:
    with pytest.raises(DefinitionError, match=f"local engine does not support {what}"):
        compile_definition(_def(step, END))


def test_unknown_field_in_a_boundary_event_is_a_plain_400() -> None:
    step = _svc("a", boundaryEvents=[{"type": "TIMER", "after": "PT1S"}])
    with pytest.raises(DefinitionError, match='unknown field "after"'):
        compile_definition(_def(step, END))


def test_empty_boundary_events_are_fine() -> None:
    compile_definition(_def(_svc("a", boundaryEvents=[]), END))


def test_join_step_must_be_a_join_gateway() -> None:
    raw = _def(
        {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY",
         "parallelNextSteps": ["a", "b"], "joinStep": "b"},
        _svc("a", "b"),
        _svc("b"),
        END,
    )  # fmt: skip
    with pytest.raises(DefinitionError, match="not a JOIN_GATEWAY"):
        compile_definition(raw)


def test_a_service_task_may_route_by_conditions() -> None:
    compiled = compile_definition(
        _def(_svc("a", None, conditionalNextSteps={"#ok == true": "end"}), END)
    )
    assert [c.source for c in compiled.steps["a"].conditions] == ["#ok == true"]


def test_null_fields_count_as_absent() -> None:
    compiled = compile_definition(_def(_svc("a", description=None, retryCount=None), END))
    assert compiled.steps["a"].retry_count == 0


@pytest.mark.parametrize(
    ("value", "name"),
    [("${first}", "first"), ("${ first_2 }", "first_2"), ("first", None), (3, None), ("${}", None)],
)
def test_variable_reference(value: object, name: str | None) -> None:
    assert variable_reference(value) == name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT2S", 2.0), ("PT0.5S", 0.5), ("PT3M", 180.0), ("PT48H", 172800.0),
     ("PT1H30M", 5400.0), ("PT1H2M3.25S", 3723.25), ("PT0S", 0.0)],
)  # fmt: skip
def test_supported_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["PT", "P1D", "PT1.5H", "pt2s", "2s", "PT2", "PT-1S", "PT1S2M"])
def test_other_texts_are_not_supported_durations(text: str) -> None:
    assert duration_seconds(text) is None


def test_boundary_timers_compile_on_tasks_and_wait_steps() -> None:
    compiled = compile_definition(
        _def(
            _svc("a", "w", boundaryEvents=[_timer("PT2S", "late")]),
            {"id": "w", "name": "W", "type": "WAIT", "nextStep": "u",
             "boundaryEvents": [_timer("PT1M", "late", interrupting=False)]},
            {"id": "u", "name": "U", "type": "USER_TASK", "nextStep": "end",
             "boundaryEvents": [{"type": "TIMER", "duration": "PT8H", "targetStepId": "end"}]},
            # Reachable only through the timers: that counts.
            _svc("late"),
            END,
        )
    )  # fmt: skip
    assert compiled.steps["a"].timers == (BoundaryTimer("PT2S", 2.0, True, "late"),)
    assert compiled.steps["w"].timers == (BoundaryTimer("PT1M", 60.0, False, "late"),)
    # A missing "interrupting" is false, as any missing boolean field.
    assert compiled.steps["u"].timers == (BoundaryTimer("PT8H", 28800.0, False, "end"),)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (_timer("PT1S", "nowhere"), "targetStepId 'nowhere' is not a step"),
        ({"type": "TIMER", "duration": "PT1S"}, "targetStepId is required"),
        ({"type": "TIMER", "targetStepId": "end"}, "duration is required"),
        (_timer("2 seconds"), "duration '2 seconds' is not an ISO-8601 duration"),
        (_timer("PT"), "duration 'PT' is not an ISO-8601 duration"),
        ({**_timer("PT1S"), "interrupting": "yes"}, "interrupting must be a JSON boolean"),
    ],
)
def test_invalid_boundary_timers_are_a_plain_400(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason) as caught:
        compile_definition(_def(_svc("a", boundaryEvents=[event]), END))
    assert "local engine does not support" not in str(caught.value)
