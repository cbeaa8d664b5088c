"""What a worker (and the fork server) sets up about its own process.

- The environment (``apply_env``): the thread variables of
  ``threads_per_worker`` and ``[supervisor.env]``. The fork server applies
  the set the supervisor started with (``apply_fork_server_env``, first
  thing, before any preloaded module loads a BLAS or OpenMP runtime: those
  read the variables once, when they load); each worker applies its own
  set again after the fork, before it imports the handlers, so that a
  SIGHUP's new values reach every library the worker loads itself.
- Its CPU (``pin_to_cpu``): ``cpu_affinity = true`` pins worker N to one CPU.
- Its thread pools (``limit_thread_pools``): pools already loaded when the
  handlers were imported (preloaded in the fork server, say) are resized
  with threadpoolctl, when it is installed. Measured: OpenBLAS loaded in the
  fork server without the variables, then limited to 1 in the worker, says
  1 but restarts its pool lazily after the fork at the size it loaded with
  (the extra threads get no work, and spin a little); loaded with the
  variables set, it starts none. So the variables are what counts, and the
  resize is for what loaded without them.
- The stack dump (``register_stack_dump``): ``DUMP_SIGNAL`` makes the worker
  write every thread's stack (``faulthandler``, from C, so a handler stuck
  in native code or ``time.sleep`` dumps too) to a file of its own,
  ``stacks-<pid>.txt`` in the supervisor's private directory
  (``WorkerSpec.stack_dir``), which the parent logs as one record naming the
  worker and its job (``loop.stack_dumps``): written to the shared stderr,
  in many small writes, the dump's lines mixed with the parent's records.
  The parent sends it before it kills a worker past its time limit or at
  the drain's deadline; an operator may send it by hand to a live worker.

Nothing here decides what the values are: the parent does, and sends them
in the worker's ``WorkerSpec``.
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from workflow_sdk.threads_limit import PoolLimitResult, limit_loaded_pools

#: Parent -> worker: write every thread's stack to the dump file (the worker goes on).
#: A real-time signal of its own: SIGUSR1 and SIGUSR2 belong to the supervisor
#: (workers ignore them, so that one sent to the whole process group does
#: what it does to the supervisor and nothing else), and SIGRTMIN+2 is the
#: worker's cancel signal.
DUMP_SIGNAL = signal.SIGRTMIN + 1
#: How to send it by hand: ``kill -s RTMIN+1 <worker pid>``.
DUMP_SIGNAL_NAME = "SIGRTMIN+1"
#: The variables the fork server applies first (JSON; set by the supervisor
#: in its own environment before the fork server starts).
ENV_FORK_SERVER = "ROCHALLOR_FORK_SERVER_ENV"


def apply_env(env: Mapping[str, str]) -> None:
    """Set ``env`` in this process (``os.environ`` also sets the C library's)."""
    os.environ.update(env)


def fork_server_env(env: Mapping[str, str]) -> str:
    """The value of ``ENV_FORK_SERVER`` for ``env``."""
    return json.dumps(dict(env), sort_keys=True)


def apply_fork_server_env() -> None:
    """In the fork server: apply what the supervisor put in ``ENV_FORK_SERVER``.

    Never raises: the fork server must start (each worker applies its own
    variables again anyway).
    """
    try:
        env = json.loads(os.environ.get(ENV_FORK_SERVER) or "{}")
    except ValueError:
        return
    if isinstance(env, dict):
        apply_env({str(k): str(v) for k, v in env.items()})


def pin_to_cpu(cpu: int | None) -> str:
    """Pin this process to ``cpu`` (None: leave it). Returns a problem, or ""."""
    if cpu is None:
        return ""
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot pin to CPU {cpu}: {exc}"
    return ""


def limit_thread_pools(threads: int) -> PoolLimitResult:
    """Resize every BLAS/OpenMP pool already loaded to ``threads``."""
    return limit_loaded_pools(threads)


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Called once the handlers are loaded: loading a model leaves tens of MiB
    freed but still resident (a file's read buffers, the temporaries of
    unpickling), which glibc keeps for later allocations. In the fork
    server those pages would be inherited by every worker and counted in
    each one's RSS and in the PSS total (measured with the ML example's
    66 MB model: 64 MiB less in total with 4 preloaded workers). False
    where the C library is not glibc.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once per process; None elsewhere."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def stack_file(directory: str, pid: int) -> str:
    """Where worker ``pid`` writes its stack dumps (the parent reads them there)."""
    return os.path.join(directory, f"stacks-{pid}.txt")


def open_stack_file(directory: str) -> int:
    """This process's dump file, opened for appending: the parent empties it
    once logged, and the next dump then starts at 0 (a plain write offset
    would leave a hole of zeros before it). Raises ``OSError``."""
    return os.open(
        stack_file(directory, os.getpid()),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )


def register_stack_dump(directory: str | None = None) -> str:
    """``DUMP_SIGNAL`` writes every thread's stack to this process's file in
    ``directory`` (None: to stderr). Returns a problem, or "".

    The file's descriptor stays open for the life of the process
    (faulthandler writes to it from the signal handler, at any time)."""
    problem = ""
    target: int | TextIO = sys.stderr
    if directory is not None:
        try:
            target = open_stack_file(directory)
        except OSError as exc:
            problem = f"stack dumps on {DUMP_SIGNAL_NAME} go to stderr: {exc}"
    try:
        faulthandler.register(DUMP_SIGNAL, file=target, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError, RuntimeError) as exc:
        # stderr replaced by something without a file descriptor. The signal
        # must still not end the worker (its default action): the parent's
        # SIGTERM follows it.
        signal.signal(DUMP_SIGNAL, signal.SIG_IGN)
        if isinstance(target, int):
            os.close(target)
        return f"no stack dump on {DUMP_SIGNAL_NAME}: {exc}"
    return problem


__all__ = [
    "DUMP_SIGNAL",
    "DUMP_SIGNAL_NAME",
    "ENV_FORK_SERVER",
    "apply_env",
    "apply_fork_server_env",
    "fork_server_env",
    "limit_thread_pools",
    "open_stack_file",
    "pin_to_cpu",
    "register_stack_dump",
    "release_free_heap",
    "stack_file",
]
