"""What each worker gets besides its handlers: environment, threads, CPU, hooks.

The rules, each a small function the arbiter and the start-up call:

- ``worker_env``: the variables every worker (and the fork server) gets:
  the thread variables of ``threads_per_worker``
  (``threads_limit.thread_env``), then ``[supervisor.env]``.
- ``thread_env_overrides``: which thread variables the supervisor's own
  environment already sets to another value. The configuration wins, its
  default included: the count that matters is per worker, and only the
  configuration knows it together with ``workers``; a blanket
  ``OMP_NUM_THREADS=8`` baked into a container image for one big process is
  exactly the oversubscription the default prevents. Said once at start-up.
- ``cpu_for``: with ``cpu_affinity = true``, worker N runs on the Nth CPU of
  those this process may use (wrapping around).
- ``worker_spec``: all of it, for one worker about to start.
- ``start_line``: the start-up line, saying where the worker count came
  from; ``start_warnings``: what is said once at start-up.
- ``parent_hooks``: ``child_exit``, imported here only with ``parent_hooks``.

Nothing here starts or signals a process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.supervisor.config import SupervisorConfig, SupervisorSection
from workflow_sdk.supervisor.loop.parent_hooks import ParentHooks
from workflow_sdk.supervisor.worker.main import WorkerSpec
from workflow_sdk.threads_limit import env_conflicts, thread_env


def worker_env(settings: SupervisorSection) -> dict[str, str]:
    """The thread variables for ``threads_per_worker``, then ``[supervisor.env]``."""
    return {**thread_env(settings.threads_per_worker), **settings.env}


def thread_env_overrides(settings: SupervisorSection, environ: Mapping[str, str]) -> str | None:
    """A warning when ``environ`` sets a thread variable to another count, else None."""
    conflicts = env_conflicts(settings.threads_per_worker, environ)
    if not conflicts:
        return None
    found = ", ".join(f"{name}={value}" for name, value in conflicts.items())
    return (
        f"the environment sets {found}: the workers get "
        f"{settings.threads_per_worker} (supervisor.threads_per_worker, whose default is 1) "
        "instead; set threads_per_worker to give each worker more threads"
    )


def start_warnings(settings: SupervisorSection, environ: Mapping[str, str]) -> list[str]:
    """Said once at start-up: thread variables of the environment that the
    configuration overrides; threads that share the one CPU of a pinned worker."""
    warnings = []
    overridden = thread_env_overrides(settings, environ)
    if overridden is not None:
        warnings.append(overridden)
    if settings.cpu_affinity and settings.threads_per_worker > 1:
        warnings.append(
            f"cpu_affinity pins each worker to one CPU: its {settings.threads_per_worker} "
            "BLAS/OpenMP threads (threads_per_worker) share that CPU"
        )
    return warnings


def parent_hooks(settings: SupervisorSection) -> ParentHooks:
    """``child_exit`` of the hooks module, imported in this process only with
    ``parent_hooks = true`` (see ``parent_hooks``). Raises ``HooksImportError``."""
    if not (settings.parent_hooks and settings.hooks):
        return ParentHooks()
    return ParentHooks.load(settings.hooks)


def usable_cpu_list() -> list[int]:
    """The CPUs this process may run on, in order (empty where there is no mask)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return sorted(getaffinity(0)) if getaffinity is not None else []


def cpu_for(slot_no: int, cpus: Sequence[int]) -> int | None:
    """Worker ``slot_no``'s CPU: the Nth of ``cpus`` (1-based, wrapping); None without any."""
    if not cpus:
        return None
    return cpus[(slot_no - 1) % len(cpus)]


def worker_spec(
    config: SupervisorConfig,
    slot_no: int,
    registry: HandlerRegistry | None,
    *,
    scrub_env: tuple[str, ...],
    metrics_dir: str | None,
    type_threads: Mapping[str, int] | None = None,
    stack_dir: str | None = None,
) -> WorkerSpec:
    """What worker ``slot_no`` is started with, from ``config`` (the one in
    effect, or a reload's on trial); ``type_threads``: the job types with a
    thread count of their own (``TypeLimits.threads``); ``stack_dir``: where
    it writes its stack dumps (``stack_dumps.StackDumps``)."""
    settings = config.supervisor
    return WorkerSpec(
        number=slot_no,
        handlers=tuple(settings.handlers),
        registry=registry,
        log_level=config.logging.level,
        log_format=config.logging.format,
        scrub_env=scrub_env,
        metrics_dir=metrics_dir,
        env=worker_env(settings),
        threads=settings.threads_per_worker,
        cpu=cpu_for(slot_no, usable_cpu_list()) if settings.cpu_affinity else None,
        hooks=settings.hooks,
        type_threads=dict(type_threads or {}),
        default_threads=settings.threads_per_worker,
        stack_dir=stack_dir,
    )


def start_line(config: SupervisorConfig, workers: int) -> str:
    """``"2 workers (the CPUs this process may use: 2 CPUs (affinity)), 1 thread each"``."""
    settings = config.supervisor
    noun = "worker" if workers == 1 else "workers"
    text = f"{workers} {noun}"
    if config.workers_from:
        text += f" (the CPUs this process may use: {config.workers_from})"
    threads = settings.threads_per_worker
    text += f", {threads} BLAS/OpenMP thread{'s' if threads != 1 else ''} each"
    if settings.cpu_affinity:
        text += ", each pinned to one CPU"
    return text


__all__ = [
    "cpu_for",
    "parent_hooks",
    "start_line",
    "start_warnings",
    "thread_env_overrides",
    "usable_cpu_list",
    "worker_env",
    "worker_spec",
]
