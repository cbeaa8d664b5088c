"""Error envelopes and the local engine's refusals (ENGINE_CONTRACT.md, "General")."""

from __future__ import annotations

import uuid

import pytest
from contract_support import definition, end, service, step

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError
from workflow_sdk.testing import LocalEngine


def test_health(client: RestEngineClient) -> None:
    assert client.health() is True


def test_the_reason_reaches_the_error_message(client: RestEngineClient) -> None:
    job_id = str(uuid.uuid4())
    with pytest.raises(EngineClientError) as caught:
        client.complete_job(job_id, "contract-worker", {})
    assert caught.value.message == f'job "{job_id}" not found'
    assert caught.value.error_code == "internal-error"


def test_a_400_carries_the_bad_request_code(client: RestEngineClient, uid: str) -> None:
    bad = definition(f"c-err-{uid}", {**service("a", "x", None), "next": "end"}, end())
    with pytest.raises(EngineClientError) as caught:
        client.upload_definition(bad)
    assert caught.value.error_code == "bad-request"
    assert "next" in caught.value.message


@pytest.mark.parametrize(
    "extra",
    [
        {"boundaryEvents": [{"type": "TIMER", "duration": "P1D", "interrupting": True,
                             "targetStepId": "end"}]},
        {"delegateClass": "com.example.Delegate"},
    ],
    ids=["timer-in-days", "delegate-class"],
)  # fmt: skip
def test_local_engine_refuses_what_it_does_not_support(
    local: LocalEngine, client: RestEngineClient, uid: str, extra: dict[str, object]
) -> None:
    refused = definition(f"c-unsup-{uid}", service("a", f"a-{uid}", **extra), end())
    with pytest.raises(EngineClientError) as caught:
        client.upload_definition(refused)
    assert caught.value.status_code == 400
    assert "local engine does not support" in caught.value.message


def test_local_engine_refuses_expression_transformations(
    local: LocalEngine, client: RestEngineClient, uid: str
) -> None:
    refused = definition(
        f"c-unsup-{uid}",
        step("t", "TRANSFORMATION", nextStep="end", transformations={"fee": "${amount * 0.01}"}),
        end(),
    )
    with pytest.raises(EngineClientError) as caught:
        client.upload_definition(refused)
    assert caught.value.status_code == 400
    assert "local engine does not support" in caught.value.message
