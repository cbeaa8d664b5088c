"""Threaded job runner for light, I/O-bound handlers."""
