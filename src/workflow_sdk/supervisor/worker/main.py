"""The worker process: imports the handlers, then runs one job at a time.

A ``WorkerSpec`` is built by the supervisor before the process starts and
pickled to it; ``Worker`` initialises itself in the child. The worker never
talks to the engine: it only receives jobs and sends outcomes on its own
channel, so all reporting rules live in one place (the parent).

It ends deliberately (``_exit_now``): once its channel is closed, after its
log records are flushed, without waiting for threads or processes the
handler code left running (Python's own exit would wait for them for ever).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, NoReturn

from workflow_sdk.errors import ConfigError, WorkerShutdown
from workflow_sdk.handler.outcome import Outcome, describe_exception, run_handler
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.jobcore import no_handler_outcome
from workflow_sdk.supervisor.exposition import multiproc, titles
from workflow_sdk.supervisor.exposition.logs import configure_logging
from workflow_sdk.supervisor.worker import process_setup, sigpolicy
from workflow_sdk.supervisor.worker.handlers import load_registry
from workflow_sdk.supervisor.worker.hooks import WorkerContext, WorkerHooks
from workflow_sdk.supervisor.worker.job_threads import JobThreads
from workflow_sdk.supervisor.worker.protocol import BootFailed, JobDone, Ready, RunJob

log = logging.getLogger("workflow_sdk.worker")

if os.environ.get(multiproc.ENV_DIR):
    # Imported first in the fork server, before any preloaded handler module
    # can create a metric (see multiproc.install_value_class).
    multiproc.install_value_class()

#: Handler modules the fork server preloads (comma-separated; set by the
#: supervisor, read by workflow_sdk.supervisor.worker.preload).
ENV_PRELOAD_MODULES = "ROCHALLOR_PRELOAD_MODULES"
#: Parent -> worker: the running job no longer matters (sets ``cancelEvent``).
#: A real-time signal of its own, so that a SIGUSR1 sent to the whole process
#: group (meant for the supervisor) does not cancel every running job.
CANCEL_SIGNAL = signal.SIGRTMIN + 2
#: Exit status of a worker whose handlers could not be loaded.
EXIT_BOOT_FAILED = 3
#: Seconds without a job after which a worker gives the heap its jobs freed
#: back to the system (``process_setup.release_free_heap``): once per idle
#: spell, never between two jobs of a busy stream.
IDLE_BEFORE_TRIM = 0.5
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class WorkerSpec:
    #: the slot's number (worker-N)
    number: int
    handlers: tuple[str, ...]
    registry: HandlerRegistry | None
    log_level: str
    log_format: str
    #: Environment variables a worker must not see (systemd's, for example).
    scrub_env: tuple[str, ...] = ()
    #: prometheus multiprocess directory, or None when metrics are off.
    metrics_dir: str | None = None
    #: Variables set before the handlers are imported (the thread limits and
    #: ``[supervisor.env]``).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Threads of the BLAS/OpenMP pools already loaded (threadpoolctl); 0 = leave them.
    threads: int = 0
    #: The CPU to pin this worker to (``cpu_affinity``), or None.
    cpu: int | None = None
    #: The hooks module (``[supervisor] hooks``), or "".
    hooks: str = ""
    #: Job type -> the BLAS/OpenMP threads while running it (``[job_types] threads``).
    type_threads: Mapping[str, int] = field(default_factory=dict)
    #: The pool's threads per worker (None: the libraries' own sizes).
    default_threads: int | None = None
    #: The supervisor's private directory for stack dumps (None: stderr).
    stack_dir: str | None = None


def current_rss() -> int:
    """This process's resident set size in bytes (one read of /proc, ~10 us)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        #: Set when the parent says the running job no longer matters.
        self.cancel_event = threading.Event()
        #: A job ran since the heap was last given back.
        self.trim_when_idle = False
        self.hooks = WorkerHooks()
        #: The thread pools' size per job type (nothing to do without a type's own).
        self.type_threads = JobThreads(spec.type_threads, spec.default_threads)

    def _on_cancel(self, signum: int, frame: FrameType | None) -> None:
        # The parent sends this just before SIGTERM when the job went stale
        # (instance cancelled or finished, step interrupted): a handler that
        # watches context["cancelEvent"] may stop early or clean up knowing why.
        self.cancel_event.set()

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        # Unwind the handler so its finally blocks run; the supervisor sends
        # SIGKILL if that takes too long. Once: a second SIGTERM arriving
        # during the unwinding must not raise again from an except block.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise WorkerShutdown(signum)

    def _init_process(self) -> None:
        for name in self.spec.scrub_env:
            os.environ.pop(name, None)
        # Before any handler import: BLAS and OpenMP read them when they load.
        process_setup.apply_env(self.spec.env)
        # Ctrl-C in a terminal, and HUP, TTIN or TTOU sent to the process
        # group, reach every worker: only the supervisor acts on them.
        sigpolicy.ignore_in_worker()
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(CANCEL_SIGNAL, self._on_cancel)
        configure_logging(self.spec.log_level, self.spec.log_format)
        titles.set_title(titles.worker_title(self.spec.number, "booting"))
        for problem in (
            process_setup.register_stack_dump(self.spec.stack_dir),
            process_setup.pin_to_cpu(self.spec.cpu),
        ):
            if problem:
                log.warning("worker-%d: %s", self.spec.number, problem)
        if self.spec.metrics_dir:
            # Before the handlers are imported, so that metrics they define
            # at import time are written to this slot's files too.
            multiproc.use_identifier(multiproc.worker_identifier(self.spec.number))

    def _limit_pools(self) -> None:
        """Pools already loaded (preloaded, or by the handlers' import): sized
        to ``threads`` (those loaded without the variables, above all), said once."""
        if not self.spec.threads:
            return
        result = process_setup.limit_thread_pools(self.spec.threads)
        # One line when there is something to say: the pools loaded and their
        # sizes, or why they could not be sized (none loaded yet: DEBUG).
        level = logging.INFO if result.pools or result.error else logging.DEBUG
        log.log(level, "worker-%d: %s", self.spec.number, result.describe())

    def _boot(self) -> HandlerRegistry:
        """Import the handlers and the hooks, size the pools, run worker_init."""
        registry = load_registry(self.spec.handlers, self.spec.registry)
        if not registry.job_types():
            raise RuntimeError("no handlers registered (check [supervisor] handlers)")
        self.hooks = WorkerHooks.load(self.spec.hooks)
        self._limit_pools()
        context = WorkerContext(
            self.spec.number,
            os.getpid(),
            tuple(registry.job_types()),
            self.spec.threads or 1,
            self.spec.cpu,
        )
        try:
            self.hooks.worker_init(context)
        except Exception as exc:
            raise WorkerInitError(f"worker_init hook ({self.hooks.name}) failed") from exc
        # What loading the handlers (or worker_init's model) freed goes back.
        process_setup.release_free_heap()
        return registry

    def run(self) -> None:
        try:
            self._init_process()
            try:
                registry = self._boot()
            except ConfigError as exc:
                # Says all there is (a missing module, a wrong attribute): no
                # traceback through our own code.
                self._exit_boot_failed(str(exc))
            except WorkerInitError as exc:
                # The hook's traceback, then a last line that names the hook
                # (the line the supervisor's log and the CLI show).
                cause = exc.__cause__ or exc
                trace = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
                self._exit_boot_failed(f"{trace.rstrip()}\n{exc}: {describe_exception(cause)}")
            except Exception:
                self._exit_boot_failed(traceback.format_exc(limit=20).rstrip())
            self.conn.send(Ready(os.getpid(), tuple(registry.job_types())))
            self._loop(registry)
        except WorkerShutdown:
            self.hooks.worker_exit()
            # Die of the signal, so the supervisor sees how we ended.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            # The supervisor closed the channel or is gone: exit quietly, now.
            self.hooks.worker_exit()
            _exit_now(0)

    def _exit_boot_failed(self, error: str) -> NoReturn:
        _ignore_term_while_exiting()
        self.conn.send(BootFailed(os.getpid(), error))
        _exit_now(EXIT_BOOT_FAILED)

    def _loop(self, registry: HandlerRegistry) -> None:
        idle = titles.worker_title(self.spec.number, "idle")
        titles.set_title(idle)
        while True:
            if self.trim_when_idle and not self.conn.poll(IDLE_BEFORE_TRIM):
                # Idle for a moment: what the last jobs freed goes back.
                process_setup.release_free_heap()
                self.trim_when_idle = False
            message = self.conn.recv()
            if not isinstance(message, RunJob):
                log.error("unexpected message from the supervisor: %r", message)
                continue
            context = message.context
            self._set_busy_title(context)
            outcome, handler_ran = self._run(registry, context)
            self.conn.send(JobDone(outcome, current_rss(), handler_ran))
            titles.set_title(idle)
            self.trim_when_idle = True

    def _set_busy_title(self, context: dict[str, Any]) -> None:
        started = time.strftime("%H:%M:%S")
        state = f"busy {context['jobType']} job={context['id']} since {started}"
        titles.set_title(titles.worker_title(self.spec.number, state))

    def _run(self, registry: HandlerRegistry, context: dict[str, Any]) -> tuple[Outcome, bool]:
        """The job's outcome, and whether a handler ran for it."""
        handler = registry.get(context["jobType"])
        if handler is None:
            who = f"worker-{self.spec.number}"
            return no_handler_outcome(context["id"], context["jobType"], who), False
        if self.type_threads.by_type:
            self.type_threads.before_job(context["jobType"])
        self.cancel_event.clear()
        context["cancelEvent"] = self.cancel_event
        refused = self.hooks.before_job(context)
        if refused is not None:
            return refused, False
        # Plain variables: the supervisor never imports handler code, so it
        # could not unpickle a handler's own dict or str subclasses. The
        # parent writes the failure's log line (one per job event) and counts
        # the job in the shared metrics once its report's fate is known.
        outcome = run_handler(handler, context, plain_variables=True, log_failures=False)
        self.hooks.after_job(context, outcome)
        return outcome, True


class WorkerInitError(Exception):
    """``worker_init`` raised (the cause): the worker cannot boot."""


def _ignore_term_while_exiting() -> None:
    # The supervisor stops the other workers when one cannot boot, and it may
    # send this one SIGTERM while it sends its boot error: raising
    # WorkerShutdown there would lose the real error, and the process is
    # leaving anyway (``_exit_now`` follows; SIGKILL if it hangs).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _exit_now(code: int) -> NoReturn:
    """End the worker process with ``code`` without waiting for anything the
    handler code left running.

    Python's exit (and multiprocessing's, around a worker's main function)
    waits for every non-daemon thread and joins every non-daemon child
    process; many client libraries start such a thread, so a worker told to
    exit could live for ever. What must outlive the process is flushed first:
    log records (logging's handlers, then the standard streams). Metrics need
    nothing: prometheus_client's multiprocess values live in shared memory
    maps of their files, whose pages outlive the process. ``atexit``
    functions never ran in a worker (multiprocessing ends its children with
    ``os._exit``), and still do not.

    SIGTERM is the default action here: nothing runs that a shutdown would
    unwind, and a flush that blocks must not keep the supervisor's SIGTERM
    from ending the process (it sends one when the worker is late).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        logging.shutdown()
    except Exception:
        pass  # a handler's own close failed: the exit goes on
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            continue  # replaced or closed by handler code
    os._exit(code)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a worker process (the ``target`` of its Process)."""
    Worker(spec, conn).run()


__all__ = ["EXIT_BOOT_FAILED", "WorkerSpec", "current_rss", "worker_main"]
