"""Engine clients."""

from workflow_sdk.client.interface import EngineClient, WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient, make_worker_client
from workflow_sdk.client.rest import RestEngineClient

__all__ = [
    "EngineClient",
    "LeanJobClient",
    "RestEngineClient",
    "WorkerEngineClient",
    "make_worker_client",
]
