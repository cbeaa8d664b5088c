"""HandlerRegistry: registration forms, look-ups, validation, thread safety."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from workflow_sdk.handler.registry import HandlerRegistry


def handler_a(job: dict[str, Any]) -> dict[str, Any] | None:
    return {"a": 1}


def handler_b(job: dict[str, Any]) -> dict[str, Any] | None:
    return None


def test_decorator_registers_and_returns_the_function_unchanged() -> None:
    registry = HandlerRegistry()

    @registry.register("score")
    def score(job: dict[str, Any]) -> dict[str, Any]:
        return {"score": job["variables"]["x"] * 2}

    assert registry.get("score") is score
    # The name still refers to the plain function, callable as before.
    assert score({"variables": {"x": 21}}) == {"score": 42}
    assert "score" in registry
    assert len(registry) == 1


def test_direct_registration_returns_the_handler() -> None:
    registry = HandlerRegistry()
    assert registry.register("a", handler_a) is handler_a
    assert registry.get("a") is handler_a


def test_get_unknown_is_none() -> None:
    registry = HandlerRegistry()
    registry.register("a", handler_a)
    assert registry.get("b") is None
    assert "b" not in registry


def test_job_types_are_sorted() -> None:
    registry = HandlerRegistry()
    for name in ["ship", "Score", "approve", "bill", "a:b"]:
        registry.register(name, handler_a)
    assert registry.job_types() == sorted(["ship", "Score", "approve", "bill", "a:b"])
    assert registry.job_types() == ["Score", "a:b", "approve", "bill", "ship"]


def test_second_registration_replaces_the_first() -> None:
    registry = HandlerRegistry()
    registry.register("a", handler_a)
    registry.register("a", handler_b)
    assert registry.get("a") is handler_b
    assert registry.job_types() == ["a"]
    assert len(registry) == 1


def test_unregister() -> None:
    registry = HandlerRegistry()
    registry.register("a", handler_a)
    registry.unregister("a")
    registry.unregister("never-there")
    assert registry.get("a") is None
    assert registry.job_types() == []


def test_callable_objects_and_lambdas_are_accepted() -> None:
    class Scorer:
        def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
            return {}

    registry = HandlerRegistry()
    scorer = Scorer()
    registry.register("obj", scorer)
    registry.register("lam", lambda job: None)
    assert registry.get("obj") is scorer
    assert registry.job_types() == ["lam", "obj"]


@pytest.mark.parametrize("bad", ["", " ", "\t\n", None, 5, b"score", ["score"]])
def test_bad_job_type_is_value_error(bad: Any) -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError):
        registry.register(bad, handler_a)
    with pytest.raises(ValueError):
        registry.register(bad)
    assert len(registry) == 0


@pytest.mark.parametrize("bad", [5, "handler", {"a": 1}])
def test_non_callable_handler_is_type_error(bad: Any) -> None:
    registry = HandlerRegistry()
    with pytest.raises(TypeError):
        registry.register("a", bad)
    decorator = registry.register("b")
    with pytest.raises(TypeError):
        decorator(bad)
    assert registry.job_types() == []


def test_concurrent_registration_from_threads() -> None:
    registry = HandlerRegistry()
    threads_count, per_thread = 16, 100
    start = threading.Barrier(threads_count)
    handlers: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                name = f"t{n}-{i}"

                def handler(job: dict[str, Any], _name: str = name) -> dict[str, Any]:
                    return {"by": _name}

                handlers[name] = handler
                registry.register(name, handler)
                registry.register("shared", handler)
                assert registry.get(name) is handler
                registry.job_types()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(registry) == threads_count * per_thread + 1
    for name, handler in handlers.items():
        assert registry.get(name) is handler
    assert registry.get("shared") in handlers.values()
    types = registry.job_types()
    assert types == sorted(types)
