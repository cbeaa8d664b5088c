"""SIGHUP's decisions: the configuration a reload tries, and when it counts.

The file is read again; a configuration that does not load keeps the old
one running (and no worker is replaced). What this process's threads and
servers were built with waits for a restart, and the log says so for each
key that changed: ``[engine]``, ``[metrics]``, ``[kafka]``, and in
``[supervisor]`` the ``worker_id``, ``report_deadline``, ``lease_renewal``,
``lease_seconds``, ``preload_handlers`` and ``parent_hooks``. The pool size
goes back to the file's, undoing SIGTTIN/SIGTTOU.

A configuration that loads is still only on trial (``Reload``): the reload's
first worker boots from it, and only once that worker is ready does the
supervisor switch to it (``Reload.ready``). Until then every other worker
started (a crashed old worker's replacement, say) boots from the old one,
and a reload whose new worker cannot boot is aborted with the old
configuration in full effect, so that a broken handler module can never
turn into boot failures that stop the supervisor. A SIGHUP during a reload
is remembered and applied once that reload ends.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping

from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.config import SupervisorConfig, load_config
from workflow_sdk.supervisor.exposition.logs import DETAILS
from workflow_sdk.supervisor.loop.slots import WorkerSlot

log = logging.getLogger("workflow_sdk.supervisor")

#: Sections built into this process's threads and servers at start.
RESTART_SECTIONS = ("engine", "metrics", "kafka")
#: ``[supervisor]`` keys read once at start (the reporters' deadline, the
#: renewal probe, the poller's and the reporters' worker id, the fork server's
#: preload list, the hooks module this process imported).
RESTART_KEYS = (
    "worker_id",
    "report_deadline",
    "lease_renewal",
    "lease_seconds",
    "preload_handlers",
    "parent_hooks",
)


def reload_config(
    current: SupervisorConfig,
    pool_target: int,
    *,
    require_handlers: bool,
    environ: Mapping[str, str] | None = None,
) -> SupervisorConfig | None:
    """The configuration to try after a SIGHUP: ``current`` itself when it has
    no file (built in code: the workers are replaced, nothing else changes),
    a new one, or None when the file does not load (no reload at all).
    ``environ``: the environment the supervisor started with (its secrets
    are no longer in ``os.environ``).

    The new one keeps ``current``'s values of what only a restart changes.
    """
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
    for section in RESTART_SECTIONS:
        if getattr(new, section) != getattr(current, section):
            log.warning("SIGHUP: [%s] changes take effect at the next restart", section)
    kept = {}
    for key in RESTART_KEYS:
        old_value = getattr(current.supervisor, key)
        if getattr(new.supervisor, key) != old_value:
            kept[key] = old_value
            log.warning(
                "SIGHUP: supervisor.%s changes take effect at the next restart (still %r)",
                key,
                old_value,
            )
    if pool_target != current.supervisor.workers:
        log.info(
            "SIGHUP: pool size back to the configuration's %d workers "
            "(SIGTTIN/SIGTTOU had made it %d)",
            new.supervisor.workers,
            pool_target,
        )
    return dataclasses.replace(
        new,
        engine=current.engine,
        metrics=current.metrics,
        kafka=current.kafka,
        supervisor=dataclasses.replace(new.supervisor, **kept),
    )


class Reload:
    """The reload in progress, if any: the configuration on trial and the
    workers started from it, and a SIGHUP that came meanwhile."""

    def __init__(self) -> None:
        #: The configuration being tried, until a worker of it is ready.
        self.trial: SupervisorConfig | None = None
        #: A reload is in progress.
        self.active = False
        #: The reload's configuration is in effect (a worker of it was ready).
        self.adopted = False
        self._queued = False
        self._started: list[WorkerSlot] = []
        #: Sets up this process's logging (level, format) when a reload changes
        #: ``[logging]``; the CLI sets it. None: an embedder's logging is left alone.
        self.log_setup: Callable[[str, str], None] | None = None

    def begin(self, new: SupervisorConfig) -> None:
        self.trial = new
        self.active = True
        self.adopted = False
        self._started.clear()

    def queue(self) -> bool:
        """A SIGHUP during the reload; True the first time (to log it once)."""
        first = not self._queued
        self._queued = True
        return first

    def config_for(self, current: SupervisorConfig, *, surge: bool) -> SupervisorConfig:
        """The configuration a worker about to start boots from: the reload's
        new workers try the new one; every other worker boots from the one
        in effect."""
        if surge and self.trial is not None:
            return self.trial
        return current

    def started(self, slot: WorkerSlot, config: SupervisorConfig) -> None:
        if config is self.trial:
            self._started.append(slot)

    def ready(self, slot: WorkerSlot) -> SupervisorConfig | None:
        """The configuration to switch to now: the trial's, when ``slot`` is its
        first worker to be ready; else None."""
        if self.trial is None or not any(slot is started for started in self._started):
            return None
        new, self.trial = self.trial, None
        self.adopted = True
        self._started.clear()
        return new

    def apply_logging(self, old: SupervisorConfig, new: SupervisorConfig) -> None:
        """``[logging]`` of a configuration now in effect: the workers started
        from it have it; this process too when the CLI set it up."""
        if new.logging == old.logging:
            return
        if self.log_setup is not None:
            self.log_setup(new.logging.level, new.logging.format)
        else:
            log.info("SIGHUP: [logging] applies to the workers (this process's is the embedder's)")

    def end(self, *, aborted: bool = False) -> bool:
        """The reload is over (finished, or ``aborted``: its new worker could
        not boot); returns whether a SIGHUP came meanwhile and is to be
        applied now."""
        if aborted and not self.adopted:
            log.error("reload aborted: the configuration from before the SIGHUP stays in effect")
        queued = self._queued
        self.trial = None
        self.active = False
        self._queued = False
        self._started.clear()
        return queued


__all__ = ["RESTART_KEYS", "RESTART_SECTIONS", "Reload", "reload_config"]
