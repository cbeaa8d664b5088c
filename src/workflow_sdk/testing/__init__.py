"""Test helpers: an in-memory engine served over real HTTP."""
