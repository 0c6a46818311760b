"""Everything wrong with a flow's YAML, found without running it.

`validate` reports, each with the path where it is (and the line, when the text says):
YAML syntax (line and column); structure (see `structure.py`); duplicate task names; task types
no plugin provides; properties that do not fit the plugin's input schema; templates that do
not parse or use something forbidden; references to tasks (`outputs.<task>`) and inputs
(`inputs.<name>`) the flow does not have; and `item`/`index` read outside a `flow.foreach`.

A property whose value is a template is accepted wherever the schema wants another type or
shape: it is rendered only when the task runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, Protocol

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError

from app.flows import structure
from app.flows.model import Flow, FlowError, Task
from app.flows.templating import Templates, is_template

_LOOP_NAMES = ("item", "index")


class TaskManifest(Protocol):
    """What validation needs of a plugin's manifest (`app.plugins.Manifest` has it)."""

    @property
    def input_schema(self) -> dict[str, Any]: ...

    @property
    def control(self) -> bool: ...


class PluginCatalog(Protocol):
    """Where task types are looked up (`app.plugins.registry.Registry` is one)."""

    def get(self, type_id: str) -> TaskManifest | None: ...


_templates: Templates | None = None


def validate(text: str, plugins: PluginCatalog, templates: Templates | None = None) -> list[FlowError]:
    """Every error in flow `text`, in the order of the text; [] when the flow is valid."""
    flow, errors, doc = structure.build(text)
    if flow is None or doc is None:
        return errors
    found = _Checks(flow, plugins, templates or _shared_templates()).run()
    return structure.located(errors + found, doc)


def _shared_templates() -> Templates:
    global _templates
    if _templates is None:
        _templates = Templates()
    return _templates


def _lenient(check: Any) -> Any:
    """A JSON Schema keyword that lets a template string through: it renders later."""

    def keyword(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if isinstance(instance, str) and is_template(instance):
            return iter(())
        return check(validator, value, instance, schema)  # type: ignore[no-any-return]

    return keyword


_TEMPLATE_AWARE = ("type", "enum", "const", "pattern", "minLength", "maxLength", "format", "oneOf", "not")
PropertiesValidator = validators.extend(
    Draft202012Validator,
    {name: _lenient(Draft202012Validator.VALIDATORS[name]) for name in _TEMPLATE_AWARE},
)


class _Checks:
    def __init__(self, flow: Flow, plugins: PluginCatalog, templates: Templates) -> None:
        self.flow = flow
        self.plugins = plugins
        self.templates = templates
        self.errors: list[FlowError] = []
        self.tasks = {task.name for task in flow.walk() if task.name}
        self.inputs = {spec.name for spec in flow.inputs}
        self.validators: dict[int, Any] = {}

    def run(self) -> list[FlowError]:
        for tasks in (self.flow.tasks, self.flow.errors, self.flow.finally_):
            for task in tasks:
                self.task(task, in_loop=False)
        for name, value in self.flow.outputs.items():
            self.values(value, f"outputs.{name}", in_loop=False)
        return self.errors

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FlowError(path, message))

    def task(self, task: Task, in_loop: bool) -> None:
        if task.type and structure.PLUGIN_ID.fullmatch(task.type):
            manifest = self.plugins.get(task.type)
            if manifest is None:
                self.fail(f"{task.path}.type", f"unknown task type '{task.type}'{self.suggestion(task.type)}")
            else:
                self.properties(task, manifest.input_schema)
        # A loop_until's condition reads the iteration's `index` (and its tasks' outputs).
        self.values(task.properties, f"{task.path}.properties", in_loop or task.type == "flow.loop_until")
        if task.run_if is not None:
            self.values(task.run_if, f"{task.path}.runIf", in_loop)
        inner_loop = in_loop or task.type in ("flow.foreach", "flow.loop_until")
        for children in task.children.values():
            for child in children:
                self.task(child, inner_loop)

    def suggestion(self, type_id: str) -> str:
        listing = getattr(self.plugins, "all", None)  # a registry can list its plugins; a bare catalog need not
        if listing is None:
            return ""
        try:
            known = [manifest.id for manifest in listing()]
        except Exception:
            return ""
        close = difflib.get_close_matches(type_id, known, n=1)
        return f" (did you mean '{close[0]}'?)" if close else ""

    def properties(self, task: Task, schema: dict[str, Any]) -> None:
        base = f"{task.path}.properties"
        validator = self.validators.get(id(schema))
        if validator is None:
            try:
                PropertiesValidator.check_schema(schema)
            except SchemaError as exc:
                self.fail(f"{task.path}.type", f"the plugin '{task.type}' has an invalid input schema: {exc.message}")
                return
            validator = self.validators[id(schema)] = PropertiesValidator(schema)
        for error in validator.iter_errors(task.properties):
            path = _join(base, error.absolute_path)
            if error.validator == "required":
                missing = [name for name in error.validator_value if name not in error.instance and repr(name) in error.message]
                self.fail(_join(path, missing[:1]), "required")
            elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
                known = error.schema.get("properties", {})
                for key in error.instance:
                    if key not in known:
                        self.fail(_join(path, [key]), f"unknown property '{key}' for {task.type}")
            else:
                self.fail(path, error.message)

    def values(self, value: Any, path: str, in_loop: bool) -> None:
        """Check every template string in `value`."""
        if isinstance(value, str):
            if is_template(value):
                self.template(value, path, in_loop)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.values(item, f"{path}.{key}", in_loop)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.values(item, f"{path}[{index}]", in_loop)

    def template(self, text: str, path: str, in_loop: bool) -> None:
        problem = self.templates.check(text)
        if problem is not None:
            self.fail(path, problem)
            return
        for kind, name in sorted(self.templates.references(text)):
            if kind == "outputs" and name not in self.tasks:
                self.fail(path, f"outputs.{name}: the flow has no task named '{name}'")
            elif kind == "inputs" and name not in self.inputs:
                self.fail(path, f"inputs.{name}: the flow has no input named '{name}'")
        if not in_loop:
            for name in _LOOP_NAMES:
                if name in self.templates.names(text):
                    self.fail(path, f"'{name}' is defined only inside the tasks of a flow.foreach or flow.loop_until")


def _join(base: str, parts: Any) -> str:
    path = base
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
