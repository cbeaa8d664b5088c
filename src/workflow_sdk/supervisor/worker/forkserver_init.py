"""Imported first by the fork server: it ignores the supervisor's signals.

Never import it anywhere else: importing it changes this process's signal
dispositions (see ``sigpolicy``).
"""

from __future__ import annotations

from workflow_sdk.supervisor.worker.sigpolicy import ignore_in_fork_server

ignore_in_fork_server()
