"""Example handlers and workflow used by ``scripts/demo`` (and a starting point for yours)."""
