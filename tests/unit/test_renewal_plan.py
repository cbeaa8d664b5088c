"""Which lease-renewal mode the supervisor runs in, decided from config and engine."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.errors import ConfigError, EngineConnectionError, LeaseLostError
from workflow_sdk.supervisor.config import parse_config
from workflow_sdk.supervisor.io.renewal import RenewalUnavailableError, plan_renewal


class Engine:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked = 0

    def extend_lease(self, job_id: str, worker_id: str, lease_seconds: int = 0) -> Any:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def config(mode: str, dispatch: str = "poll") -> Any:
    data: dict[str, Any] = {
        "engine": {"dispatch": dispatch},
        "supervisor": {"lease_renewal": mode},
        "kafka": {"brokers": ["k:9092"]},
    }
    return parse_config(data, environ={})


CAN = LeaseLostError(409, "no such job")  # an engine with the route refuses an unknown job
CANNOT = None  # a released engine's plain 404
DOWN = EngineConnectionError("refused", request_sent=False)


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_an_engine_that_can_renew_is_used(mode: str) -> None:
    engine = Engine(CAN)
    assert plan_renewal(config(mode), engine) is engine


def test_auto_runs_without_renewal_on_a_released_or_unreachable_engine() -> None:
    assert plan_renewal(config("auto"), Engine(CANNOT)) is None
    assert plan_renewal(config("auto"), Engine(DOWN)) is None


def test_required_refuses_a_released_engine_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r'supervisor\.lease_renewal: "required"'):
        plan_renewal(config("required"), Engine(CANNOT))


def test_required_cannot_decide_while_the_engine_is_down() -> None:
    with pytest.raises(RenewalUnavailableError):
        plan_renewal(config("required"), Engine(DOWN))


def test_off_and_kafka_dispatch_never_ask() -> None:
    engine = Engine(CAN)
    assert plan_renewal(config("off"), engine) is None
    assert plan_renewal(config("auto", dispatch="kafka"), engine) is None
    assert engine.asked == 0
