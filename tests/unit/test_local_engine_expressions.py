"""The local engine's DECISION expression parser and evaluator."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.testing.expressions import ExpressionError, evaluate, evaluate_condition, parse

VARS: dict[str, Any] = {
    "status": "OK",
    "amount": 150,
    "ratio": 0.75,
    "flag": True,
    "off": False,
    "nothing": None,
    "name": "O'Brien",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("#status == 'OK'", True),
        ('#status == "OK"', True),
        ("#status != 'OK'", False),
        ("#amount > 100", True),
        ("#amount >= 150", True),
        ("#amount < 150", False),
        ("#amount <= 150.0", True),
        ("#ratio < 1", True),
        ("#amount > -5", True),
        ("#amount == 150.0", True),  # int and float compare as numbers
        ("#amount == '150'", False),  # no conversion between types
        ("#flag == true", True),
        ("#off == false", True),
        ("#flag", True),
        ("!#flag", False),
        ("!!#flag", True),
        ("!(#amount > 100)", False),
        ("#nothing == null", True),
        ("#status == 'OK' && #amount > 100", True),
        ("#status == 'KO' || #amount > 100", True),
        ("#status == 'KO' || #amount > 100 && #off", False),  # && binds tighter
        ("(#status == 'KO' || #amount > 100) && #flag", True),
        ("'abc' < 'abd'", True),
        ("#name == 'O\\'Brien'", True),
        ("  #amount   >   1e2  ", True),
        ("#flag == 1", False),  # a boolean is not a number
    ],
)
def test_evaluates(source: str, expected: bool) -> None:
    assert evaluate_condition(parse(source), VARS) is expected


def test_short_circuit_skips_the_right_side() -> None:
    # The right side would fail (undefined variable) if it were evaluated.
    assert evaluate_condition(parse("#off && #undefined == 1"), VARS) is False
    assert evaluate_condition(parse("#flag || #undefined == 1"), VARS) is True


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("#undefined == 1", "undefined variable #undefined"),
        ("#status > 1", "cannot compare"),
        ("#nothing < 1", "cannot compare"),
        ("#amount && #flag", "needs a boolean"),
        ("!#amount", "needs a boolean"),
        ("#amount", "needs a boolean"),  # a condition must be a boolean
    ],
)
def test_evaluation_errors(source: str, problem: str) -> None:
    with pytest.raises(ExpressionError, match=problem):
        evaluate_condition(parse(source), VARS)


@pytest.mark.parametrize(
    "source",
    [
        "",
        "   ",
        "#status ==",
        "== 'OK'",
        "#status = 'OK'",
        "#status == 'OK",
        "(#flag",
        "#flag)",
        "status == 'OK'",  # a bare word is not a variable
        "#amount * 2 > 10",  # no arithmetic
        "#a < #b < #c",  # chained comparison
        "#status matches 'O.*'",
        "#flag and #off",
        "#",
    ],
)
def test_parse_errors(source: str) -> None:
    with pytest.raises(ExpressionError):
        parse(source)


def test_error_names_the_position() -> None:
    with pytest.raises(ExpressionError, match="position 8"):
        parse("#status $ 'OK'")


def test_evaluate_returns_values_of_any_type() -> None:
    assert evaluate(parse("#status"), VARS) == "OK"
    assert evaluate(parse("42"), {}) == 42
    assert evaluate(parse("'x'"), {}) == "x"
