"""Threaded job runner for light, I/O-bound handlers."""

from workflow_sdk.runner.runner import Runner, RunnerStats, default_worker_id

__all__ = ["Runner", "RunnerStats", "default_worker_id"]
