"""Engine clients."""

from workflow_sdk.client.interface import EngineClient, WorkerEngineClient
from workflow_sdk.client.rest import RestEngineClient

__all__ = ["EngineClient", "RestEngineClient", "WorkerEngineClient"]
