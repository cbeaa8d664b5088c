"""run_handler's rules for turning a handler call into an Outcome (and the handler context)."""

from __future__ import annotations

import json
import logging
import types
from typing import Any

import pytest

from workflow_sdk.errors import NonRetryableError, WorkerShutdown
from workflow_sdk.handler import outcome as outcome_mod
from workflow_sdk.handler.context import CONTEXT_KEYS, build_context
from workflow_sdk.handler.outcome import Outcome, check_result, describe_exception, run_handler

CTX: dict[str, Any] = {"id": "job-1", "jobType": "score", "variables": {"x": 2}}


def returning(value: object) -> Any:
    """A handler that returns ``value`` (typed Any: these values break the Handler type)."""
    return lambda ctx: value


class Thing:
    def __repr__(self) -> str:
        return "<Thing 42>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BrokenStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str exploded")


def test_dict_result_is_success() -> None:
    out = run_handler(lambda ctx: {"y": ctx["variables"]["x"] * 3}, CTX)
    assert out.succeeded is True
    assert out.variables == {"y": 6}
    assert out.error_message == ""
    assert (out.job_id, out.job_type) == ("job-1", "score")


def test_none_result_is_success_with_no_variables() -> None:
    out = run_handler(lambda ctx: None, CTX)
    assert out.succeeded is True
    assert out.variables == {}


def test_handler_receives_the_context() -> None:
    seen: list[dict[str, Any]] = []
    run_handler(seen.append, CTX)
    assert seen == [CTX]


def test_non_retryable_error_keeps_its_message() -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise NonRetryableError("card declined")

    out = run_handler(handler, CTX)
    assert out.succeeded is False
    assert out.retryable is False
    assert out.error_message == "card declined"
    assert out.variables == {}


def test_non_retryable_error_without_message_uses_its_type() -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise NonRetryableError()

    out = run_handler(handler, CTX)
    assert out.retryable is False
    assert out.error_message == "NonRetryableError"


def test_other_exception_is_retryable_with_type_and_message() -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise ValueError("x")

    out = run_handler(handler, CTX)
    assert out.succeeded is False
    assert out.retryable is True
    assert out.error_message == "ValueError: x"


def test_exception_without_message_is_its_type_name() -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise KeyError

    out = run_handler(handler, CTX)
    assert out.retryable is True
    assert out.error_message == "KeyError"


def test_exception_with_broken_str_does_not_escape() -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise BrokenStrError()

    out = run_handler(handler, CTX)
    assert out.succeeded is False
    assert out.retryable is True
    assert out.error_message == "BrokenStrError"


def test_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def handler(ctx: dict[str, Any]) -> None:
        raise ValueError("logged")

    with caplog.at_level(logging.WARNING, logger="workflow_sdk.handler"):
        run_handler(handler, CTX)
    assert any("ValueError: logged" in r.getMessage() for r in caplog.records)


def test_base_exceptions_are_not_swallowed() -> None:
    def shutdown(ctx: dict[str, Any]) -> None:
        raise WorkerShutdown()

    def interrupted(ctx: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(WorkerShutdown):
        run_handler(shutdown, CTX)
    with pytest.raises(KeyboardInterrupt):
        run_handler(interrupted, CTX)


@pytest.mark.parametrize(
    ("result", "expected_in_message"),
    [
        ([1, 2], "list"),
        ("done", "str"),
        (42, "int"),
        (float("nan"), "float"),
        (Thing(), "<Thing 42>"),
        ((1, 2), "tuple"),
    ],
)
def test_non_dict_result_fails_for_good_and_says_what_was_returned(
    result: object, expected_in_message: str
) -> None:
    out = run_handler(returning(result), CTX)
    assert out.succeeded is False
    assert out.retryable is False
    assert expected_in_message in out.error_message
    assert "dict" in out.error_message  # says what was expected


@pytest.mark.parametrize(
    ("result", "expected_in_message"),
    [
        ({"tags": {"a", "b"}}, "set"),
        ({"when": Thing()}, "Thing"),
        ({"x": float("nan")}, "not JSON"),
        ({"x": float("inf")}, "not JSON"),
        ({"x": [1, {"y": float("-inf")}]}, "not JSON"),
        ({(1, 2): "tuple key"}, "not JSON"),
        ({"b": b"bytes"}, "bytes"),
    ],
)
def test_unserialisable_variables_fail_for_good(result: object, expected_in_message: str) -> None:
    out = run_handler(returning(result), CTX)
    assert out.succeeded is False
    assert out.retryable is False
    assert expected_in_message in out.error_message


def test_object_with_broken_repr_is_described_anyway() -> None:
    out = run_handler(returning(BrokenRepr()), CTX)
    assert out.succeeded is False
    assert out.retryable is False
    assert "BrokenRepr" in out.error_message


def test_huge_repr_is_shortened() -> None:
    out = run_handler(returning(["x" * 100] * 100), CTX)
    assert out.retryable is False
    assert len(out.error_message) < 400


def test_circular_and_too_deep_variables_fail_for_good() -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["n"] = {}
        node = node["n"]
    for result in (circular, deep):
        out = run_handler(returning(result), CTX)
        assert out.succeeded is False
        assert out.retryable is False
        assert "JSON" in out.error_message


def test_duration_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(outcome_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def slow(ctx: dict[str, Any]) -> dict[str, Any]:
        clock[0] += 1.25
        return {}

    def slow_failure(ctx: dict[str, Any]) -> None:
        clock[0] += 0.5
        raise RuntimeError("late")

    def slow_nonretryable(ctx: dict[str, Any]) -> None:
        clock[0] += 2.0
        raise NonRetryableError("no")

    def slow_bad_result(ctx: dict[str, Any]) -> Any:
        clock[0] += 3.0
        return [1]

    assert run_handler(slow, CTX).duration == pytest.approx(1.25)
    assert run_handler(slow_failure, CTX).duration == pytest.approx(0.5)
    assert run_handler(slow_nonretryable, CTX).duration == pytest.approx(2.0)
    assert run_handler(slow_bad_result, CTX).duration == pytest.approx(3.0)


def test_check_result_and_describe_exception() -> None:
    assert check_result(None) == ({}, "")
    assert check_result({"a": [1, "b", None, True, 1.5]}) == ({"a": [1, "b", None, True, 1.5]}, "")
    variables, problem = check_result([1])
    assert variables is None
    assert problem
    assert describe_exception(ValueError("x")) == "ValueError: x"
    assert describe_exception(TimeoutError()) == "TimeoutError"


def test_successful_variables_are_json_ready() -> None:
    out = run_handler(lambda ctx: {"n": 1, "s": "é", "l": [None]}, CTX)
    assert json.loads(json.dumps(out.variables, allow_nan=False)) == {"n": 1, "s": "é", "l": [None]}


def test_outcome_failure_constructor() -> None:
    out = Outcome.failure("j", "t", "bad", retryable=False, duration=0.5)
    assert out == Outcome("j", "t", False, {}, "bad", False, 0.5)


# -- handler context ---------------------------------------------------------


def test_build_context_from_a_released_engine_job() -> None:
    job = {
        "id": "j",
        "jobType": "t",
        "instanceId": "i",
        "stepId": "",
        "stepExecutionId": "se",
        "retriesRemaining": 2,
        "variables": {"a": 1},
        "lockExpiresAt": "2024-03-01T12:00:30Z",
        "workerId": "w",
        "status": "LOCKED",
    }
    ctx = build_context(job)
    assert tuple(ctx) == CONTEXT_KEYS
    assert ctx == {
        "id": "j",
        "jobType": "t",
        "instanceId": "i",
        "stepId": "",
        "stepExecutionId": "se",
        "retriesRemaining": 2,
        "variables": {"a": 1},
        "lockExpiresAt": "2024-03-01T12:00:30Z",
    }


def test_build_context_fills_missing_fields() -> None:
    ctx = build_context({"id": "j", "jobType": "t", "variables": None, "stepId": None})
    assert ctx["stepId"] == ""
    assert ctx["stepExecutionId"] == ""
    assert ctx["instanceId"] == ""
    assert ctx["variables"] == {}
    assert ctx["retriesRemaining"] == 0
    assert ctx["lockExpiresAt"] is None


def test_plain_variables_are_builtin_types_whatever_the_handler_returned() -> None:
    class Tagged(str):
        pass

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        return {"tag": Tagged("x"), "pair": (1, 2)}

    outcome = run_handler(handler, {"id": "j", "jobType": "t"}, plain_variables=True)
    assert outcome.variables == {"tag": "x", "pair": [1, 2]}
    assert type(outcome.variables["tag"]) is str
