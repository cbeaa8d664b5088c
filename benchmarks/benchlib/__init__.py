"""Pieces of ``scripts/bench``: handlers, process control, scenarios, statistics."""
