"""The worker supervisor: a pool of forked worker processes fed by one parent."""

from workflow_sdk.supervisor.arbiter import Supervisor
from workflow_sdk.supervisor.config import SupervisorConfig, load_config, parse_config

__all__ = ["Supervisor", "SupervisorConfig", "load_config", "parse_config"]
