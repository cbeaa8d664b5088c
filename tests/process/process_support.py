"""Helpers the process and Kafka tiers share: reading a supervisor's /metrics."""

from __future__ import annotations

import re

from process.conftest import SupervisorProcess


def metrics_url(sv: SupervisorProcess) -> str:
    sv.wait_for_log("metrics on http://")
    match = re.search(r"metrics on (http://\S+/metrics)", sv.log())
    assert match, sv.log()
    return match.group(1)


def sample(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (``default``
    when it is not there yet, if given)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    if default is not None:
        return default
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")
