from workflow_sdk.supervisor.cli import entry_point

entry_point()
