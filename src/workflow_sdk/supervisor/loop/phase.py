"""The supervisor's phase: exactly one at a time, owned by the arbiter.

``RUNNING`` claims and runs jobs; ``RELOADING`` does too while a SIGHUP's
workers replace the old ones one at a time; ``DRAINING`` claims nothing and
lets running jobs finish (SIGTERM, SIGINT); ``DONE`` ends the main loop.
The other objects of the loop are told the phase when it matters to them;
none of them changes it.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """The supervisor's phase; exactly one at a time."""

    RUNNING = "running"
    RELOADING = "reloading"
    DRAINING = "draining"
    DONE = "done"


__all__ = ["Phase"]
