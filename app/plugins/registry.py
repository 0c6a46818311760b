"""The plugin interface and the catalogue of plugins.

A plugin is a task type of a flow: a `Manifest` (what it is called, what properties it takes and
what it returns, as JSON Schema) and a `run` function. The flow runner renders a task's
properties and hands them to `Registry.run`, which checks them against the manifest's
`input_schema`, runs the plugin and checks what it returned against its `output_schema`: a
plugin receives valid properties and cannot hand the flow an output its manifest does not
promise. Control-flow types (`flow.*`) have a manifest only; the runner runs them itself.

A plugin touches the server only through the `TaskContext` it is given (logs, cancellation,
KV, credentials, user code through the fork server): plugins import nothing from
`app.services` or `app.api`, so a third-party plugin is as walled off from the server's
internals as a built-in one.

Plugins are found in the built-in category modules (`app/plugins/<category>.py`, each with a
`PLUGINS` list) and in the entry-point group `flowmill.plugins`, whose entry points name a
module (its `PLUGINS`) or a `Plugin`. A third-party plugin that fails to load or is invalid is
logged and skipped: it never stops the server.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import importlib
import importlib.metadata
import inspect
import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, Union

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

log = logging.getLogger("flowmill.plugins")

ENTRY_POINT_GROUP = "flowmill.plugins"
BUILTIN_CATEGORIES = ("util", "http", "kv", "script", "flowmill", "flow")
ROLES = ("viewer", "executor", "editor", "admin")
_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MAX_MESSAGE = 300  # a validation message quotes the value it refuses: long ones are cut


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a plugin is, as the catalogue and the flow validator see it."""

    id: str  # "http.request": the task's `type` in a flow
    name: str  # "HTTP request"
    category: str  # the id's first part: "util", "http", "kv", "script", "flowmill", "flow"
    description: str
    input_schema: dict[str, Any]  # JSON Schema of `properties` (flow.*: without the nested task lists)
    output_schema: dict[str, Any]  # JSON Schema of what `run` returns
    credential: str | None = None  # the credential or resource type it takes, if any
    role: str = "executor"  # the role the flow's identity needs to run it
    control: bool = False  # flow.*: run by the flow runner itself, no `run`


class TaskFailed(Exception):
    """A task's failure the flow records (a bad property, a 500 answer, a failed assertion):
    not a fault of the server. `name` is short and stable, for programs ("HttpStatus");
    `message` is for people."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class TaskContext(Protocol):
    """Everything a plugin may ask of the server, given by the flow runner for one task."""

    workspace: str
    execution_id: str
    task_name: str
    storage_dir: Path  # a folder for the execution's files

    def log(self, message: str) -> None:
        """Append a line to the task's log."""

    def cancelled(self) -> bool:
        """True once the execution is being cancelled."""

    async def wait_cancelled(self) -> None:
        """Return when the execution is cancelled (never, if it is not)."""

    async def kv_get(self, namespace: str, key: str) -> Any:
        """The value of a KV entry of the workspace, None when missing."""

    async def kv_set(self, namespace: str, key: str, value: Any) -> None:
        """Create or replace a KV entry."""

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove a KV entry; False when there was none."""

    async def credential(self, name: str) -> str:
        """A credential's clear value (the runner masks it in logs and outputs)."""

    async def run_python(
        self, code: str | None, path: str | None, args: dict[str, Any], timeout_s: float | None
    ) -> Any:
        """Run inline code (`def main(...)`) or a script by path with `args`, through the fork
        server, walled off like any user code; its result. TaskFailed when it fails."""

    async def run_script(self, path: str, args: dict[str, Any], wait: bool) -> dict[str, Any]:
        """Start a script as a run of its own: `{jobId, status, result}` (result when waited)."""


Output = dict[str, Any]
Run = Callable[[dict[str, Any], TaskContext], Union[Awaitable[Output], Output]]


@dataclasses.dataclass(frozen=True)
class Plugin:
    """A manifest and its run function: `async def` when it does I/O on the event loop; a
    plain `def` is run on a worker thread (`asyncio.to_thread`) so it cannot stall the loop.
    `run` is None for control-flow types."""

    manifest: Manifest
    run: Run | None = None


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A plugin with its schemas compiled once (a validator costs far more to build than to use)."""

    plugin: Plugin
    inputs: Draft202012Validator
    outputs: Draft202012Validator
    defaults: dict[str, Any]  # top-level `default`s of the input schema, filled in before `run`


class Registry:
    """The plugins by id. `get` makes it the `PluginCatalog` the flow validator reads."""

    def __init__(self, plugins: Iterable[Plugin] = (), *, check_schemas: bool = True) -> None:
        self._entries: dict[str, _Entry] = {}
        for plugin in plugins:
            self.add(plugin, check_schemas=check_schemas)

    def add(self, plugin: Plugin, *, check_schemas: bool = True) -> None:
        """Register a plugin; ValueError when its manifest is invalid or its id is taken.
        `check_schemas=False` trusts its schemas to be valid JSON Schema (checking one against
        the 2020-12 metaschema costs ~1.5 ms)."""
        manifest = plugin.manifest
        problem = _manifest_problem(plugin)
        if problem:
            raise ValueError(f"plugin {manifest.id!r}: {problem}")
        if manifest.id in self._entries:
            raise ValueError(f"plugin {manifest.id!r} is already registered")
        try:
            inputs = _validator(manifest.input_schema, check_schemas)
            outputs = _validator(manifest.output_schema, check_schemas)
        except SchemaError as error:
            raise ValueError(f"plugin {manifest.id!r}: invalid JSON Schema: {error.message}") from None
        defaults = {
            name: prop["default"]
            for name, prop in (manifest.input_schema.get("properties") or {}).items()
            if isinstance(prop, dict) and "default" in prop
        }
        self._entries[manifest.id] = _Entry(plugin, inputs, outputs, defaults)

    def get(self, type_id: str) -> Manifest | None:
        entry = self._entries.get(type_id)
        return entry.plugin.manifest if entry else None

    def plugin(self, type_id: str) -> Plugin | None:
        entry = self._entries.get(type_id)
        return entry.plugin if entry else None

    def all(self) -> list[Manifest]:
        """Every manifest, by id."""
        return [self._entries[type_id].plugin.manifest for type_id in sorted(self._entries)]

    def categories(self) -> list[str]:
        """The categories that have plugins, sorted."""
        return sorted({entry.plugin.manifest.category for entry in self._entries.values()})

    async def run(self, type_id: str, properties: dict[str, Any], ctx: TaskContext) -> Output:
        """Run a plugin with rendered properties; its checked output. TaskFailed when the
        type is unknown or a control type, the properties or the output do not fit the
        manifest, or the plugin fails (an unexpected exception is recorded as its class name)."""
        entry = self._entries.get(type_id)
        if entry is None:
            raise TaskFailed("UnknownPlugin", f"no plugin {type_id!r}")
        run = entry.plugin.run
        if run is None:
            raise TaskFailed("NotRunnable", f"{type_id} is run by the flow runner, not as a plugin")
        problems = _problems(entry.inputs, properties, "properties")
        if problems:
            raise TaskFailed("InvalidProperties", "; ".join(problems))
        given = {**copy.deepcopy(entry.defaults), **properties} if entry.defaults else dict(properties)
        try:
            if inspect.iscoroutinefunction(run):
                output = await run(given, ctx)
            else:
                output = await asyncio.to_thread(run, given, ctx)
                if inspect.isawaitable(output):
                    output = await output
        except TaskFailed:
            raise
        except Exception as error:  # a plugin's bug is its task's failure, not the server's
            # Where, not what: the message may quote a credential, and the server's log is not masked.
            log.warning("plugin %s failed with %s (a bug of the plugin?) at:\n%s", type_id, type(error).__name__,
                        "".join(traceback.format_tb(error.__traceback__)).rstrip())
            raise TaskFailed(type(error).__name__, getattr(error, "message", None) or str(error)) from error
        if output is None:
            output = {}
        if not isinstance(output, dict):
            raise TaskFailed("InvalidOutput", f"{type_id} returned {type(output).__name__}, not an object")
        problems = _problems(entry.outputs, output, "outputs")
        if problems:
            raise TaskFailed("InvalidOutput", "; ".join(problems))
        return output


def _validator(schema: dict[str, Any], check: bool) -> Draft202012Validator:
    if check:
        Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _problems(validator: Draft202012Validator, value: Any, root: str) -> list[str]:
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_path(root, error)}: {_message(error)}" for error in errors]


def _message(error: ValidationError) -> str:
    # `{"not": {}, "description": why}` forbids a property (given another): say why, not the schema.
    if error.validator == "not" and error.validator_value == {} and isinstance(error.schema, dict):
        return f"not allowed: {error.schema.get('description') or 'in this combination'}"
    return _cut(error.message)


def _path(root: str, error: ValidationError) -> str:
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)


def _cut(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _manifest_problem(plugin: Any) -> str | None:
    if not isinstance(plugin, Plugin) or not isinstance(plugin.manifest, Manifest):
        return "not a Plugin with a Manifest"
    manifest = plugin.manifest
    if not _ID.match(manifest.id):
        return "an id is lowercase dotted words, like 'http.request'"
    if manifest.id.split(".", 1)[0] != manifest.category:
        return f"its id must start with its category {manifest.category!r}"
    if manifest.role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    if not isinstance(manifest.input_schema, dict) or not isinstance(manifest.output_schema, dict):
        return "input_schema and output_schema must be JSON Schema objects"
    if manifest.control != (plugin.run is None):
        return "a control type has no run function; every other plugin has one"
    if plugin.run is not None and not callable(plugin.run):
        return "run is not callable"
    return None


# -- discovery -------------------------------------------------------------------------------------


def plugins_of(source: Any) -> list[Plugin]:
    """The plugins a module (its `PLUGINS`), a `Plugin` or a list of them stands for."""
    if isinstance(source, Plugin):
        return [source]
    if isinstance(source, ModuleType):
        source = getattr(source, "PLUGINS", None)
        if source is None:
            raise ValueError("the module has no PLUGINS list")
    if isinstance(source, (list, tuple)) and all(isinstance(p, Plugin) for p in source):
        return list(source)
    raise ValueError(f"expected a module with PLUGINS, a Plugin or a list of them, got {type(source).__name__}")


def builtin_plugins() -> list[Plugin]:
    """The plugins that ship with Flowmill (a broken one is a bug: it raises)."""
    found: list[Plugin] = []
    for category in BUILTIN_CATEGORIES:
        found += plugins_of(importlib.import_module(f"app.plugins.{category}"))
    return found


def add_entry_points(registry: Registry) -> list[str]:
    """Add the plugins of the `flowmill.plugins` entry points; the ids added. An entry point
    that fails to load, or a plugin that is invalid or takes an id already registered, is
    logged and skipped."""
    added: list[str] = []
    try:
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # a broken distribution's metadata must not stop the server either
        log.warning("could not list the %s entry points", ENTRY_POINT_GROUP, exc_info=True)
        return added
    for entry_point in entry_points:
        try:
            plugins = plugins_of(entry_point.load())
        except Exception as error:
            log.warning("plugin entry point %r skipped: %s: %s", entry_point.name, type(error).__name__, error)
            continue
        for plugin in plugins:
            try:
                registry.add(plugin)
            except Exception as error:
                log.warning("plugin entry point %r: a plugin skipped: %s", entry_point.name, error)
                continue
            added.append(plugin.manifest.id)
    return added


def default_registry() -> Registry:
    """The built-in plugins and those installed under the entry-point group `flowmill.plugins`."""
    # The built-ins' schemas are checked by the tests (tests/unit/test_plugins.py), not at every start.
    registry = Registry(builtin_plugins(), check_schemas=False)
    added = add_entry_points(registry)
    if added:
        log.info("third-party plugins: %s", ", ".join(added))
    return registry
