"""Test helpers: an in-memory engine served over real HTTP.

``LocalEngine`` speaks the Rochallor engine's REST contract on 127.0.0.1 so
that handlers, workers and the client can be tested without a real engine.
It is not a production engine: nothing is kept on disk.
"""

from workflow_sdk.testing.definitions import DefinitionError, compile_definition
from workflow_sdk.testing.engine import LocalEngine, default_sweep_interval
from workflow_sdk.testing.expressions import ExpressionError
from workflow_sdk.testing.store import EngineError

__all__ = [
    "DefinitionError",
    "EngineError",
    "ExpressionError",
    "LocalEngine",
    "compile_definition",
    "default_sweep_interval",
]
