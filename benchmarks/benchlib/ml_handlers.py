"""examples/ml's handlers, each also returning when it ran (for ``benchmarks/bench --ml``).

Imported by worker processes (and by the fork server with
``preload_handlers``): it imports ``examples.ml.handlers``, which loads the
model, and registers each of its handlers again under the same job type,
wrapped so that the result also carries ``<type>Start`` and ``<type>End``
(``time.monotonic()``: one clock for every process of the machine), with
``-`` in the type turned to ``_``. The handlers' own results are untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from examples.ml import handlers as ml

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

Handler = Callable[[dict[str, Any]], Any]


def stamp_key(job_type: str) -> str:
    return job_type.replace("-", "_")


def _stamped(job_type: str, inner: Handler) -> Handler:
    key = stamp_key(job_type)

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        result = dict(inner(job) or {})
        result[f"{key}Start"] = started
        result[f"{key}End"] = time.monotonic()
        return result

    return handler


for _job_type in ml.JOB_TYPES:
    _inner = ml.registry.get(_job_type)
    assert _inner is not None, _job_type
    registry.register(_job_type, _stamped(_job_type, _inner))
