"""Forms built from what a runnable or an approval declares it takes.

Three sources, one shape (`Field`): a script's input schema (JSON Schema inferred from `main`),
a flow's `inputs` (read from its YAML) and an approval's `form`. `SchemaForm` lays a field out
as the widget its type wants and reads the values back typed, naming every field it cannot
read; the server's own field errors are shown beside the fields the same way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import yaml
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, SelectionList

NO_DEFAULT = object()


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: str  # string integer number boolean select multiselect json array datetime secret
    required: bool = False
    default: Any = NO_DEFAULT
    description: str = ""
    choices: tuple[Any, ...] = ()
    items: str | None = None  # array: the items' type
    hint: str = ""  # a placeholder saying what to type

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT and self.default is not None


class FormInvalid(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# -- where fields come from --------------------------------------------------------------------------


def fields_from_schema(schema: dict[str, Any]) -> list[Field]:
    """A script's arguments, from the JSON Schema of its `main` (in the order of `main`)."""
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    order = [name for name in schema.get("order") or [] if name in properties]
    order += [name for name in properties if name not in order]
    fields = []
    for name in order:
        spec = properties[name] or {}
        kind = spec.get("type", "json")
        if isinstance(kind, list):  # ["string", "null"]
            kind = next((k for k in kind if k != "null"), "json")
        fmt = str(spec.get("format") or "")
        hint = ""
        if "enum" in spec:
            kind = "select"
        elif kind == "array" and isinstance(spec.get("items"), dict) and "enum" in spec["items"]:
            kind = "multiselect"
        elif fmt.startswith("resource-"):
            kind, hint = "string", f"$res:path of a {fmt.removeprefix('resource-')} resource"
        elif kind == "string" and fmt in ("date-time", "date"):
            kind = "datetime"
        elif kind not in ("string", "integer", "number", "boolean", "array"):
            kind = "json"
        given_items = spec.get("items")
        items: dict[str, Any] = given_items if isinstance(given_items, dict) else {}
        choices = tuple(spec.get("enum") or items.get("enum") or ())
        fields.append(Field(name, kind, name in required, spec.get("default", NO_DEFAULT),
                            str(spec.get("description") or ""), choices, items.get("type"), hint))
    return fields


def fields_from_flow(yaml_text: str) -> list[Field]:
    """A flow's inputs, as its YAML declares them (docs/flows.md, Inputs)."""
    try:
        document = yaml.safe_load(yaml_text) or {}
    except yaml.YAMLError:
        return []
    declared = document.get("inputs") if isinstance(document, dict) else None
    return fields_from_declarations(declared if isinstance(declared, list) else [])


def fields_from_declarations(declared: list[Any]) -> list[Field]:
    """Fields declared as a flow's inputs or an approval's form: `{name, type?, required?,
    default?, description?, values?, items?}` (text when no type is given)."""
    fields = []
    for spec in declared:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue
        fields.append(Field(spec["name"], str(spec.get("type") or "string"), bool(spec.get("required")),
                            spec.get("default", NO_DEFAULT), str(spec.get("description") or ""),
                            tuple(spec.get("values") or ()), spec.get("items")))
    return fields


# -- reading a value back ----------------------------------------------------------------------------


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("is not valid JSON") from None


def _read_array(field: Field, text: str) -> list[Any]:
    """A list as JSON (`[1, 2]`), or for a list of texts, texts separated by commas."""
    if text.startswith("["):
        value = _parse_json(text)
        if not isinstance(value, list):
            raise ValueError("must be a list")
        return value
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if field.items in ("integer", "number"):
        return [_read_number(field.items, part) for part in parts]
    if field.items in (None, "string"):
        return parts
    raise ValueError("must be a JSON list, e.g. [1, 2]")


def _read_number(kind: str, text: str) -> int | float:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        raise ValueError("must be a whole number" if kind == "integer" else "must be a number") from None


def read_text(field: Field, text: str) -> Any:
    """The value typed for `field`: ValueError saying what is wrong."""
    if field.type in ("integer", "number"):
        return _read_number(field.type, text)
    if field.type == "json":
        return _parse_json(text)
    if field.type == "array":
        return _read_array(field, text)
    if field.type == "datetime" and not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        raise ValueError("must be a date, e.g. 2024-05-01 or 2024-05-01T12:00:00Z")
    return text


def _as_text(field: Field, value: Any) -> str:
    if not field.has_default:
        return ""
    if field.type in ("json", "array") or not isinstance(value, (str, int, float)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _widget_id(name: str) -> str:
    return "field-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


class SchemaForm(VerticalScroll):
    """The fields, each with its label, its widget and a line for its error."""

    can_focus = False  # the fields take the focus (the first when the form opens), not their container

    def __init__(self, fields: list[Field], *, id: str | None = None) -> None:
        super().__init__(id=id, classes="schema-form")
        self.fields = fields

    def compose(self) -> ComposeResult:
        if not self.fields:
            yield Label("No inputs.", classes="form-empty")
        for field in self.fields:
            mark = " [b $error]*[/]" if field.required else ""
            kind = field.type if not field.items else f"{field.type} of {field.items}"
            about = f"  [dim]{field.description}[/]" if field.description else ""
            if field.type != "boolean":
                yield Label(f"[b]{field.name}[/]{mark} [dim]{kind}[/]{about}", classes="form-label", markup=True)
            yield self._widget(field)
            error = Label("", id=_widget_id(field.name) + "-error", classes="form-error")
            error.display = False
            yield error

    def _widget(self, field: Field) -> Widget:
        wid = _widget_id(field.name)
        if field.type == "boolean":
            return Checkbox(field.name + (" *" if field.required else ""), bool(field.default is True), id=wid,
                            compact=True)
        if field.type == "select" and field.choices:
            options = [(str(choice), choice) for choice in field.choices]
            default = field.default if field.has_default and field.default in field.choices else Select.NULL
            return Select(options, value=default, allow_blank=not field.required or default is Select.NULL, id=wid,
                          compact=True)
        if field.type == "multiselect" and field.choices:
            chosen = field.default if isinstance(field.default, list) else []
            return SelectionList(*[(str(c), c, c in chosen) for c in field.choices], id=wid, compact=True)
        placeholder = field.hint or {
            "integer": "a whole number", "number": "a number", "json": "JSON, e.g. {\"a\": 1}",
            "array": "a list: a, b, c or [1, 2]", "datetime": "2024-05-01T12:00:00Z", "secret": "hidden as you type",
        }.get(field.type, "")
        if not field.required and not field.has_default:
            placeholder = (placeholder + " (optional)").strip()
        return Input(_as_text(field, field.default), placeholder=placeholder, password=field.type == "secret", id=wid,
                     compact=True)

    def focus_first(self) -> None:
        for widget in self.query("Input, Select, Checkbox, SelectionList"):
            widget.focus()
            return

    def values(self) -> dict[str, Any]:
        """The values typed, by name: a field left empty is left out (the server fills in its
        default). FormInvalid names every field that cannot be read."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for field in self.fields:
            widget = self.query_one("#" + _widget_id(field.name))
            try:
                if isinstance(widget, Checkbox):
                    values[field.name] = widget.value
                elif isinstance(widget, Select):
                    if widget.value is not Select.NULL:
                        values[field.name] = widget.value
                    elif field.required:
                        raise ValueError("required")
                elif isinstance(widget, SelectionList):
                    values[field.name] = list(widget.selected)
                else:
                    assert isinstance(widget, Input)
                    text = widget.value.strip() if field.type != "secret" else widget.value
                    if text:
                        values[field.name] = read_text(field, text)
                    elif field.required:
                        raise ValueError("required")
            except ValueError as error:
                errors[field.name] = str(error)
        self.show_errors(errors)
        if errors:
            raise FormInvalid(errors)
        return values

    def show_errors(self, errors: dict[str, str]) -> None:
        """Show each error beside its field (keys: a field's name, or the server's path of it,
        `inputs.count`, `values.note`); clear the others."""
        by_name = {key.rsplit(".", 1)[-1]: message for key, message in errors.items()}
        for field in self.fields:
            label = self.query_one("#" + _widget_id(field.name) + "-error", Label)
            message = by_name.get(field.name, "")
            label.update(message)
            label.display = bool(message)
