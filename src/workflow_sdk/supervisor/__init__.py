"""The worker supervisor: a pool of forked worker processes fed by one parent."""

from workflow_sdk.supervisor.config import SupervisorConfig, load_config, parse_config
from workflow_sdk.supervisor.loop.arbiter import Supervisor

__all__ = ["Supervisor", "SupervisorConfig", "load_config", "parse_config"]
