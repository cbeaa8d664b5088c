"""Pieces of ``benchmarks/bench``: handlers, process control, scenarios, statistics."""
