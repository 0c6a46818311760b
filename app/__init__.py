"""Flowmill: a self-hosted automation engine in one process."""

__version__ = "0.1.0"
