"""Python SDK for the Rochallor workflow engine."""

from workflow_sdk._version import VERSION
from workflow_sdk.client.interface import EngineClient, WorkerEngineClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import (
    EngineClientError,
    EngineConnectionError,
    NonRetryableError,
    WorkflowSDKError,
)
from workflow_sdk.handler.registry import HandlerRegistry

__version__ = VERSION

__all__ = [
    "EngineClient",
    "EngineClientError",
    "EngineConnectionError",
    "HandlerRegistry",
    "NonRetryableError",
    "RestEngineClient",
    "WorkerEngineClient",
    "WorkflowSDKError",
    "__version__",
]
