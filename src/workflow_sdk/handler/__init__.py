"""Handler registry, handler context and outcome rules."""

from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import Outcome, run_handler
from workflow_sdk.handler.registry import Handler, HandlerRegistry

__all__ = ["Handler", "HandlerRegistry", "Outcome", "build_context", "run_handler"]
