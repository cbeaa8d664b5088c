"""SIGHUP's decision: the configuration a reload switches to.

The file is read again; a configuration that does not load keeps the old
one running (and no worker is replaced). ``[engine]`` and ``[metrics]``
belong to this process's threads and server: their changes wait for a
restart. The pool size goes back to the file's, undoing SIGTTIN/SIGTTOU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.config import SupervisorConfig, load_config
from workflow_sdk.supervisor.logs import DETAILS

log = logging.getLogger("workflow_sdk.supervisor")


def reload_config(
    current: SupervisorConfig,
    pool_target: int,
    *,
    require_handlers: bool,
    environ: Mapping[str, str] | None = None,
) -> SupervisorConfig | None:
    """The configuration to run after a SIGHUP: ``current`` itself when it has
    no file (built in code: the workers are replaced, nothing else changes),
    a new one, or None when the file does not load (no reload at all).
    ``environ``: the environment the supervisor started with (its secrets
    are no longer in ``os.environ``)."""
    if not os.path.isfile(current.source):
        return current
    try:
        new = load_config(current.source, environ, require_handlers=require_handlers)
    except ConfigError as exc:
        log.error(
            "SIGHUP: configuration not reloaded, still running the old one",
            extra={DETAILS: str(exc)},
        )
        return None
    for section in ("engine", "metrics"):
        if getattr(new, section) != getattr(current, section):
            log.warning("SIGHUP: [%s] changes take effect at the next restart", section)
    if pool_target != current.supervisor.workers:
        log.info(
            "SIGHUP: pool size back to the configuration's %d workers "
            "(SIGTTIN/SIGTTOU had made it %d)",
            new.supervisor.workers,
            pool_target,
        )
    return dataclasses.replace(new, engine=current.engine, metrics=current.metrics)


__all__ = ["reload_config"]
