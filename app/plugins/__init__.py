"""Plugins: the task types of flows (`util.log`, `http.request`, `flow.if`, ...) and their registry.

`registry.py` holds the interface (Manifest, Plugin, TaskContext, TaskFailed) and the catalogue;
each other module is one category of built-in plugins, with a `PLUGINS` list.
"""

from app.plugins.registry import Manifest, Plugin, Registry, TaskContext, TaskFailed, default_registry

__all__ = ["Manifest", "Plugin", "Registry", "TaskContext", "TaskFailed", "default_registry"]
