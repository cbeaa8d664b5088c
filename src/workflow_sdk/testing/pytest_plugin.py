"""pytest plugin shipped with the SDK (fixtures for users' tests)."""
