"""Handler results with numpy values, NaN and objects json refuses: converted where
lossless, else the job fails for good with a message naming the key path.

Before: ``{"score": np.float32(0.5)}`` failed the job with "not JSON-serialisable:
Object of type float32 is not JSON serializable", naming no key, and nothing was
converted (issue 18).
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from typing import Any

import pytest

from ml_support import import_single_threaded
from workflow_sdk.handler.jsonable import make_json_ready
from workflow_sdk.handler.outcome import check_result, run_handler

CTX: dict[str, Any] = {"id": "job-1", "jobType": "score", "variables": {}}


def returning(value: object) -> Any:
    return lambda ctx: value


@pytest.fixture
def np() -> Any:
    (numpy,) = import_single_threaded("numpy")
    return numpy


class Booster:
    """Stands for a model object a handler returns by mistake."""


# -- without numpy -------------------------------------------------------------


def test_plain_results_are_not_copied_or_walked() -> None:
    """The fast path: json accepts them as they are, so the same object comes back."""
    result = {"a": [1, 2.5, "x", None, True], "b": {"c": (1, 2)}}
    variables, problem = check_result(result)
    assert problem == ""
    assert variables is result


def test_numpy_is_never_imported_for_a_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "numpy", raising=False)
    out = run_handler(returning({"model": Booster(), "n": 1}), CTX)
    assert (
        out.error_message == "result key 'model': object of type Booster is not JSON-serialisable"
    )
    assert "numpy" not in sys.modules


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            {"scores": [0.5, math.nan]},
            "result key 'scores[1]' is a float NaN: not JSON-serialisable "
            "(the engine's JSON rejects NaN and Infinity)",
        ),
        ({"a": {"b": [1, {"c": -math.inf}]}}, "result key 'a.b[1].c' is a float -Infinity"),
        ({"x y": {"1": math.inf}}, "result key 'x y['1']' is a float Infinity"),
        ({"tags": {"a"}}, "result key 'tags': object of type set is not JSON-serialisable"),
        ({"blob": b"\x00"}, "result key 'blob': object of type bytes is not JSON-serialisable"),
        ({(1, 2): "v"}, "result has a key (1, 2) of type tuple: not JSON-serialisable"),
        ({"a": {frozenset(): 1}}, "result key 'a' has a key frozenset() of type frozenset"),
        ({"a": {math.nan: 1}}, "result key 'a' has a key nan of type float"),
    ],
)
def test_the_message_names_the_key_path(result: dict[Any, Any], message: str) -> None:
    out = run_handler(returning(result), CTX)
    assert out.succeeded is False
    assert out.retryable is False
    assert out.error_message.startswith(message)


def test_a_circular_result_names_where_it_loops() -> None:
    inner: list[Any] = []
    result = {"a": {"b": inner}}
    inner.append(result["a"])
    out = run_handler(returning(result), CTX)
    assert out.error_message == (
        "result key 'a.b[0]' refers back to itself: not JSON-serialisable (circular reference)"
    )


def test_the_same_object_twice_is_not_a_cycle() -> None:
    shared = [1, 2]
    result = {"a": shared, "b": shared, "c": {1, 2}}
    out = run_handler(returning(result), CTX)
    assert out.error_message.startswith("result key 'c'")  # a and b passed


def test_a_converted_result_keeps_builtin_keys_and_subclasses() -> None:
    # A set fails the fast path; make_json_ready copies what is fine as it is.
    variables, problem = make_json_ready(OrderedDict([("k", (1, 2)), (3, None), (True, 1.5)]))
    assert problem == ""
    assert variables == {"k": [1, 2], 3: None, True: 1.5}
    assert type(variables) is dict


# -- with numpy ------------------------------------------------------------------


def test_numpy_scalars_are_converted(np: Any) -> None:
    result = {
        "count": np.int64(3),
        "small": np.uint8(255),
        "score": np.float32(0.5),
        "exact": np.float64(0.1),
        "flag": np.bool_(True),
        "name": np.str_("x"),
    }
    out = run_handler(returning(result), CTX, plain_variables=True)
    assert out.succeeded, out.error_message
    assert out.variables == {
        "count": 3,
        "small": 255,
        "score": 0.5,
        "exact": 0.1,
        "flag": True,
        "name": "x",
    }
    assert [type(v) for v in out.variables.values()] == [int, int, float, float, bool, str]


def test_numpy_arrays_become_nested_lists(np: Any) -> None:
    result = {
        "matrix": np.arange(6, dtype=np.int32).reshape(2, 3),
        "probs": np.array([0.25, 0.75], dtype=np.float32),
        "mask": np.array([True, False]),
        "labels": np.array(["a", "b"]),
        "mixed": np.array([1, "x", None, np.float64(2.0)], dtype=object),
        "zero_d": np.array(7),
        "empty": np.zeros((0, 3)),
        "nested": [{"v": np.float16(1.5)}],
    }
    out = run_handler(returning(result), CTX, plain_variables=True)
    assert out.succeeded, out.error_message
    assert out.variables == {
        "matrix": [[0, 1, 2], [3, 4, 5]],
        "probs": [0.25, 0.75],
        "mask": [True, False],
        "labels": ["a", "b"],
        "mixed": [1, "x", None, 2.0],
        "zero_d": 7,
        "empty": [],
        "nested": [{"v": 1.5}],
    }


def test_the_runner_gets_converted_variables_too(np: Any) -> None:
    """Without plain_variables (the threaded Runner) the converted copy comes back."""
    out = run_handler(returning({"n": np.int64(2), "a": np.array([1.5])}), CTX)
    assert out.succeeded
    assert out.variables == {"n": 2, "a": [1.5]}
    json.dumps(out.variables, allow_nan=False)


def test_numpy_keys_are_converted(np: Any) -> None:
    out = run_handler(
        returning({"hist": {np.int64(3): 1, np.bool_(False): 2}}), CTX, plain_variables=True
    )
    assert out.succeeded, out.error_message
    assert out.variables == {"hist": {"3": 1, "false": 2}}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda np: {"scores": np.array([0.1, 0.2, 0.3, np.nan], dtype=np.float32)},
            "result key 'scores[3]' is a numpy.float32 NaN: not JSON-serialisable",
        ),
        (
            lambda np: {"grid": np.array([[1.0, 2.0], [np.inf, 0.0]])},
            "result key 'grid[1][0]' is a numpy.float64 Infinity",
        ),
        (
            lambda np: {"x": np.float32("nan")},
            "result key 'x' is a numpy.float32 NaN",
        ),
        (
            lambda np: {"x": np.float64("-inf")},
            "result key 'x' is a numpy.float64 -Infinity",
        ),
        (
            lambda np: {"z": np.array([1 + 2j])},
            "result key 'z' is a numpy array of complex128: not JSON-serialisable",
        ),
        (
            lambda np: {"z": np.complex64(1)},
            "result key 'z': object of type numpy.complex64 is not JSON-serialisable",
        ),
        (
            lambda np: {"when": np.datetime64("2024-01-01")},
            "result key 'when': object of type numpy.datetime64 is not JSON-serialisable",
        ),
        (
            lambda np: {"raw": np.array([b"a"])},
            "result key 'raw' is a numpy array of |S1: not JSON-serialisable",
        ),
        (
            lambda np: {"objs": np.array([1, Booster()], dtype=object)},
            "result key 'objs[1]': object of type Booster is not JSON-serialisable",
        ),
        (
            lambda np: {"m": {np.float64("nan"): 1}},
            "result key 'm' has a key np.float64(nan) of type numpy.float64",
        ),
    ],
)
def test_what_cannot_be_converted_is_refused_naming_the_key(
    np: Any, make: Any, message: str
) -> None:
    out = run_handler(returning(make(np)), CTX)
    assert out.succeeded is False
    assert out.retryable is False
    # numpy < 2 writes reprs without "np.float64(...)": compare only up to it.
    assert out.error_message.startswith(message.split(" np.", maxsplit=1)[0])


def test_longdouble_only_when_a_float_holds_it_exactly(np: Any) -> None:
    if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        pytest.skip("longdouble is float64 on this platform")
    exact = run_handler(returning({"v": np.longdouble(1.5)}), CTX, plain_variables=True)
    assert exact.variables == {"v": 1.5}
    lossy = run_handler(returning({"v": np.longdouble(1) / 3}), CTX)
    assert lossy.succeeded is False
    assert "float cannot hold exactly" in lossy.error_message
    arr = run_handler(
        returning({"v": np.array([1.5, 1], dtype=np.longdouble)}), CTX, plain_variables=True
    )
    assert arr.variables == {"v": [1.5, 1.0]}
