"""The faults of a run, drawn from its seed before anything starts.

The same seed gives the same list (kinds, targets, moments, durations,
parameters): that is what makes a run replayable. What the system does in
answer is timing-dependent; the list is printed and kept in the JSON.

A fault is a ``Fault``: at ``at`` seconds into the workload, ``kind`` hits
``target`` for ``duration`` seconds. Faults of one *lane* (``lane``) never
overlap: one supervisor's processes (spaced by ``PROCESS_GAP`` seconds), one
proxy (toxiproxy 2.5 can hang removing a toxic from a link that another
toxic holds), the engine's knobs, the broker. Faults of different lanes
overlap freely.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

#: kind -> (class shown in the tables, family)
KINDS: dict[str, tuple[str, str]] = {
    "latency": ("net: latency 200 ms +-100", "net"),
    "bandwidth": ("net: bandwidth 2 KB/s", "net"),
    "slow_close": ("net: slow close", "net"),
    "reset_peer": ("net: reset_peer (answer lost)", "net"),
    "blackhole": ("net: timeout (half-open)", "net"),
    "slicer": ("net: slicer", "net"),
    "proxy_down": ("net: engine unreachable", "net"),
    "slow_complete": ("engine: completes past the client timeout", "engine"),
    "fail_answer_delay": ("engine: fail answers held", "engine"),
    "burst_5xx": ("engine: 5xx burst (not applied)", "engine"),
    "burst_5xx_applied": ("engine: 500 after the change", "engine"),
    "kill_busy_worker": ("proc: SIGKILL busy worker", "proc"),
    "kill_idle_worker": ("proc: SIGKILL idle worker", "proc"),
    "kill_parent": ("proc: SIGKILL parent, restart", "proc"),
    "stop_parent": ("proc: SIGSTOP parent past the lease", "proc"),
    "term_restart": ("proc: SIGTERM mid-run, restart", "proc"),
    "reload": ("proc: SIGHUP workers + job types", "proc"),
    "ttin_ttou": ("proc: SIGTTIN / SIGTTOU", "proc"),
    "broker_restart": ("kafka: broker restart", "kafka"),
    "join_leave": ("kafka: supervisor joins and leaves", "kafka"),
    "broker_net": ("kafka: broker connection cut", "kafka"),
}
#: Faults only the local engine can do (skipped with --engine-url).
LOCAL_ONLY = ("slow_complete", "fail_answer_delay", "burst_5xx", "burst_5xx_applied")
KAFKA_ONLY = ("broker_restart", "join_leave", "broker_net")
PROCESS_GAP = 6.0


@dataclass
class Fault:
    kind: str
    at: float
    duration: float
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def fault_class(self) -> str:
        return KINDS[self.kind][0]

    @property
    def family(self) -> str:
        return KINDS[self.kind][1]

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "class": self.fault_class}


def _duration(kind: str, rng: random.Random, lease: float) -> tuple[float, dict[str, Any]]:
    if kind == "stop_parent":
        return lease + rng.uniform(2.0, 5.0), {}
    if kind in ("kill_busy_worker", "kill_idle_worker", "kill_parent"):
        return rng.uniform(0.5, 3.0), {}
    if kind == "term_restart":
        return rng.uniform(1.0, 3.0), {}
    if kind == "reload":
        return rng.uniform(4.0, 10.0), {"workers": rng.choice([1, 2, 4])}
    if kind == "ttin_ttou":
        return rng.uniform(3.0, 8.0), {}
    if kind == "slow_complete":
        return rng.uniform(3.0, 6.0), {"delay": rng.uniform(2.5, 4.0)}
    if kind == "fail_answer_delay":
        return rng.uniform(4.0, 8.0), {"delay": rng.uniform(1.0, 3.0)}
    if kind in ("burst_5xx", "burst_5xx_applied"):
        route = rng.choice(["complete", "complete", "fail", "poll", "instance"])
        status = 500 if kind.endswith("applied") else rng.choice([500, 502, 503, 504])
        if kind.endswith("applied"):
            route = rng.choice(["complete", "fail"])
        return 2.0, {"route": route, "count": rng.randint(2, 8), "status": status}
    if kind == "broker_restart":
        return rng.uniform(3.0, 8.0), {}
    if kind == "join_leave":
        return rng.uniform(6.0, 12.0), {}
    if kind == "proxy_down":
        return rng.uniform(1.0, 5.0), {}
    if kind == "latency":
        return rng.uniform(3.0, 8.0), {"latency": 200, "jitter": 100}
    if kind == "bandwidth":
        return rng.uniform(2.0, 5.0), {"rate": 2}
    if kind == "slow_close":
        return rng.uniform(2.0, 6.0), {"delay": rng.randint(200, 2000)}
    if kind == "reset_peer":
        return rng.uniform(0.5, 2.0), {"timeout": rng.randint(20, 400)}
    if kind == "blackhole":
        return rng.uniform(1.0, 4.0), {"timeout": 0}
    if kind == "slicer":
        return rng.uniform(2.0, 6.0), {"average_size": 16, "size_variation": 8, "delay": 2000}
    if kind == "broker_net":
        return rng.uniform(1.0, 5.0), {"mode": rng.choice(["reset_peer", "down", "latency"])}
    raise ValueError(kind)


def lane(fault: Fault) -> str:
    """Faults of one lane run one after the other: a supervisor's processes,
    its engine proxy, the engine's knobs, the broker."""
    if fault.family == "proc":
        return f"proc:{fault.target}"
    if fault.family == "net":
        return f"net:{fault.target}"
    if fault.kind == "broker_net":
        return f"broker:{fault.target}"
    return fault.family


def draw(
    seed: int,
    kinds: list[str],
    per_kind: int,
    duration: float,
    *,
    targets: list[str],
    lease: float,
) -> list[Fault]:
    """``per_kind`` faults of each kind within ``duration`` seconds, from ``seed``."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    for kind in kinds:
        family = KINDS[kind][1]
        for _ in range(per_kind):
            length, params = _duration(kind, rng, lease)
            shared = family == "engine" or kind in ("broker_restart", "join_leave")
            target = "*" if shared else rng.choice(targets)
            faults.append(Fault(kind, -1.0, round(length, 2), target, params))
    # Each lane: its faults in a random order, spread over the duration with
    # random gaps (at least GAPS[family] seconds between two).
    for name in sorted({lane(f) for f in faults}):
        mine = [f for f in faults if lane(f) == name]
        rng.shuffle(mine)
        gap = PROCESS_GAP if name.startswith("proc") else 2.0
        need = sum(f.duration + gap for f in mine)
        slack = max(0.0, duration - 10.0 - need)
        cuts = sorted(rng.uniform(0.0, slack) for _ in mine)
        moment, previous = 5.0, 0.0
        for fault, cut in zip(mine, cuts, strict=True):
            moment += cut - previous
            previous = cut
            fault.at = round(moment, 2)
            moment += fault.duration + gap
    faults.sort(key=lambda f: (f.at, f.kind))
    return faults


def kinds_for(dispatch: str, *, local_engine: bool, network: bool) -> tuple[list[str], list[str]]:
    """(kinds to inject, kinds skipped with the reason in the output)."""
    chosen, skipped = [], []
    for kind, (_, family) in KINDS.items():
        if kind in KAFKA_ONLY and dispatch != "kafka":
            continue
        needs_proxy = family == "net" or kind == "broker_net"
        if (kind in LOCAL_ONLY and not local_engine) or (needs_proxy and not network):
            skipped.append(kind)
        else:
            chosen.append(kind)
    return chosen, skipped
