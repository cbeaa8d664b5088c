"""Imported first by the fork server: it ignores the supervisor's signals and
takes the workers' environment (the thread limits, ``[supervisor.env]``)
before any other module loads a BLAS or OpenMP runtime.

Never import it anywhere else: importing it changes this process's signal
dispositions (see ``sigpolicy``) and environment (see ``process_setup``).
"""

from __future__ import annotations

from workflow_sdk.supervisor.worker.process_setup import apply_fork_server_env
from workflow_sdk.supervisor.worker.sigpolicy import ignore_in_fork_server

ignore_in_fork_server()
apply_fork_server_env()
