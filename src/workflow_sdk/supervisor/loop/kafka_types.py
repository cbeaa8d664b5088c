"""Which job types the Kafka consumers follow: those the pool's workers serve.

Each worker's Ready message lists its job types. They change on SIGHUP (new
handler modules) and, without ``preload_handlers``, whenever a replacement
imports changed code. During a reload old and new workers coexist, so the
types to consume are the union over the workers that can take a job now
(ready, not retiring). A type goes only when none of them serves it and no
worker is booting (a booting worker's types are not known yet: after a
crash, its replacement would otherwise make the groups be left and joined
again). With no worker ready at all the set stays as it is.

A verdict only: the feeder (``kafka_feeder``) joins and leaves the groups,
the intake gives back the claimed jobs of a type that went.
"""

from __future__ import annotations

from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState


def types_to_consume(pool: WorkerPool, current: frozenset[str]) -> frozenset[str]:
    """The job types to consume now, given those consumed (``current``)."""
    served: set[str] = set()
    booting = False
    for slot in pool.slots.values():
        if slot.retiring:
            continue
        if slot.state is SlotState.BOOTING:
            booting = True
        elif slot.state in (SlotState.IDLE, SlotState.BUSY):
            served |= slot.job_types
    if booting or not served:
        return current | served
    return frozenset(served)


__all__ = ["types_to_consume"]
