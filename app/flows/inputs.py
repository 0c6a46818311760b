"""A flow's typed inputs: how the YAML declares them, and the values an execution is given,
checked against them.

Values arrive as JSON, already typed: the text "3" is not an integer and is not turned into one
(a caller that sends text where a number is wanted has a bug worth hearing about). A datetime
is ISO-8601 text and stays text; it is checked, not converted, so templates see what was sent.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Collection
from typing import Any

from app.errors import BadRequest
from app.flows.model import INPUT_TYPES, ITEM_TYPES, Flow, FlowInput


def check_inputs(flow: Flow, given: dict[str, Any] | None) -> dict[str, Any]:
    """The inputs of an execution of `flow`: every declared input, given or defaulted (None when
    optional and absent). BadRequest naming every bad field in `details["errors"]`
    (`[{"path": "inputs.<name>", "message": ...}]`) when one is missing, unknown or misfit."""
    given = {} if given is None else given
    errors: list[dict[str, str]] = []
    if not isinstance(given, dict):
        raise BadRequest("inputs must be a JSON object", {"errors": [{"path": "inputs", "message": "must be an object"}]})
    declared = {spec.name for spec in flow.inputs}
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            errors.append({"path": f"inputs.{name}", "message": f"unknown input (the flow's inputs: {known})"})
    values: dict[str, Any] = {}
    for spec in flow.inputs:
        value = given.get(spec.name)
        if value is None:
            if spec.default is None and spec.required:
                errors.append({"path": f"inputs.{spec.name}", "message": "required"})
            values[spec.name] = spec.default
            continue
        try:
            values[spec.name] = convert(spec, value)
        except ValueError as exc:
            errors.append({"path": f"inputs.{spec.name}", "message": str(exc)})
    if errors:
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        raise BadRequest(f"invalid inputs: {summary}", {"errors": errors})
    return values


def secret_inputs(flow: Flow) -> set[str]:
    """Names of the inputs of type `secret`: the runner masks their values wherever they show."""
    return {spec.name for spec in flow.inputs if spec.type == "secret"}


def convert(spec: FlowInput, value: Any) -> Any:
    """`value` as an input of `spec` holds it; ValueError saying what is wrong otherwise.
    Also how a flow's `default` is checked when the flow is read."""
    check = _CHECKS[spec.type]
    return check(spec, value)


def _text(spec: FlowInput, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {_kind(value)}")
    _length(spec, len(value), "characters")
    if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        raise ValueError(f"does not match the pattern {spec.pattern}")
    return value


def _secret(spec: FlowInput, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {_kind(value)}")  # never echo a secret's value
    _length(spec, len(value), "characters")
    if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        raise ValueError("does not match the pattern")
    return value


def _integer(spec: FlowInput, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 from a JSON encoder that writes every number as a float
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {_kind(value)}")
    _bounds(spec, value)
    return value


def _number(spec: FlowInput, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a number, not {_kind(value)}")
    _bounds(spec, value)
    return value


def _boolean(spec: FlowInput, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_kind(value)}")
    return value


def _select(spec: FlowInput, value: Any) -> Any:
    if not _among(value, spec.values):
        raise ValueError(f"must be one of {', '.join(map(repr, spec.values))}")
    return value


def _multiselect(spec: FlowInput, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of choices, not {_kind(value)}")
    for i, item in enumerate(value):
        if not _among(item, spec.values):
            raise ValueError(f"item {i}: must be one of {', '.join(map(repr, spec.values))}")
    if len({repr(item) for item in value}) != len(value):
        raise ValueError("a choice is given twice")
    _length(spec, len(value), "choices")
    return value


def _json(spec: FlowInput, value: Any) -> Any:
    return value  # any JSON value: it came as JSON (or YAML read as plain data)


def _datetime(spec: FlowInput, value: Any) -> str:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO-8601 date and time, such as 2024-05-01T12:00:00Z, not {_kind(value)}")
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date and time, such as 2024-05-01T12:00:00Z") from None
    return value


def _array(spec: FlowInput, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list, not {_kind(value)}")
    _length(spec, len(value), "items")
    if spec.items is None or spec.items == "json":
        return value
    check = _CHECKS[spec.items]
    plain = _plain_item(spec.items)
    items: list[Any] = []
    for i, item in enumerate(value):
        try:
            items.append(check(plain, item))
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from None
    return items


def _plain_item(type_: str) -> FlowInput:
    return FlowInput(name="item", type=type_)


def _length(spec: FlowInput, size: int, unit: str) -> None:
    if spec.min_length is not None and size < spec.min_length:
        raise ValueError(f"must have at least {spec.min_length} {unit}")
    if spec.max_length is not None and size > spec.max_length:
        raise ValueError(f"must have at most {spec.max_length} {unit}")


def _bounds(spec: FlowInput, value: float) -> None:
    if spec.min is not None and value < spec.min:
        raise ValueError(f"must be {spec.min:g} or more")
    if spec.max is not None and value > spec.max:
        raise ValueError(f"must be {spec.max:g} or less")


def _among(value: Any, choices: tuple[Any, ...]) -> bool:
    return any(_same(value, choice) for choice in choices)


def _same(value: Any, choice: Any) -> bool:
    """Equal as JSON values: 1 is 1.0, but `true` is not the choice 1 (as it is in Python)."""
    if isinstance(value, bool) or isinstance(choice, bool):
        return type(value) is type(choice) and value == choice
    if isinstance(value, (int, float)) and isinstance(choice, (int, float)):
        return value == choice
    return type(value) is type(choice) and value == choice


def _kind(value: Any) -> str:
    names = {str: "text", bool: "a boolean", int: "a whole number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_CHECKS: dict[str, Any] = {
    "string": _text,
    "secret": _secret,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "select": _select,
    "multiselect": _multiselect,
    "json": _json,
    "datetime": _datetime,
    "array": _array,
}


# -- declarations: the YAML `inputs` --------------------------------------------------------

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")  # as task names: read as inputs.<name> (or inputs['a-b'])
FIELDS = (
    "name", "type", "required", "default", "description", "values", "min", "max", "minLength", "maxLength", "pattern", "items",
)
NAME_RULE = "up to 100 letters, digits, '_' or '-', starting with a letter or '_'"


def declared(value: Any) -> tuple[tuple[FlowInput, ...], list[tuple[str, str]]]:
    """The inputs a flow declares (its YAML `inputs`), and what is wrong with them as
    (path, message); a declaration with a problem is left out. Defaults are checked (and
    converted) as values of their input."""
    reading = _Declarations()
    return reading.all(value), reading.problems


class _Declarations:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def name(self, value: Any, path: str) -> str:
        if value is None:
            self.fail(path, "required")
        elif isinstance(value, bool):
            self.fail(path, "YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote the name")
        elif not isinstance(value, str) or not NAME.fullmatch(value):
            self.fail(path, f"{value!r} is not a valid name: {NAME_RULE}")
        else:
            return value
        return ""

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "must be true or false")
            return False
        return value

    def text(self, value: Any, path: str) -> str:
        if value is not None and not isinstance(value, str):
            self.fail(path, "must be text")
            return ""
        return value or ""

    def all(self, value: Any) -> tuple[FlowInput, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail("inputs", "must be a list of inputs: [{name, type, ...}]")
            return ()
        found: list[FlowInput] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            spec = self.one(item, f"inputs[{i}]")
            if spec is None:
                continue
            if spec.name in seen:
                self.fail(f"inputs[{i}].name", f"duplicate input name '{spec.name}'")
                continue
            seen.add(spec.name)
            found.append(spec)
        return tuple(found)

    def one(self, data: Any, path: str) -> FlowInput | None:
        if not isinstance(data, dict):
            self.fail(path, "an input is a mapping with at least name and type")
            return None
        before = len(self.problems)
        for key in data:
            if key not in FIELDS:
                self.fail(f"{path}.{key}", f"unknown field '{key}' (known: {', '.join(FIELDS)})")
        name = self.name(data.get("name"), f"{path}.name")
        type_ = data.get("type")
        if type_ not in INPUT_TYPES:
            known = ", ".join(INPUT_TYPES)
            problem = f"{type_!r} is not an input type (one of {known})" if type_ is not None else f"required: one of {known}"
            self.fail(f"{path}.type", problem)
            return None
        spec = FlowInput(
            name=name,
            type=type_,
            required=self.flag(data.get("required", False), f"{path}.required"),
            description=self.text(data.get("description"), f"{path}.description"),
            values=self.choices(data, type_, path),
            min=self.bound(data, "min", type_, path, ("integer", "number")),
            max=self.bound(data, "max", type_, path, ("integer", "number")),
            min_length=self.length(data, "minLength", type_, path),
            max_length=self.length(data, "maxLength", type_, path),
            pattern=self.pattern(data, type_, path),
            items=self.items(data, type_, path),
        )
        for low, high, key in ((spec.min, spec.max, "max"), (spec.min_length, spec.max_length, "maxLength")):
            if low is not None and high is not None and low > high:
                self.fail(f"{path}.{key}", "must not be below its minimum")
        if len(self.problems) > before:
            return None
        if data.get("default") is not None:
            try:
                default = convert(spec, data["default"])
            except ValueError as exc:
                self.fail(f"{path}.default", f"does not fit the input: {exc}")
                return None
            return dataclasses.replace(spec, default=default)
        return spec

    def choices(self, data: dict[str, Any], type_: str, path: str) -> tuple[Any, ...]:
        values = data.get("values")
        if type_ not in ("select", "multiselect"):
            if values is not None:
                self.fail(f"{path}.values", "applies to select and multiselect inputs only")
            return ()
        if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            self.fail(f"{path}.values", f"required for a {type_} input: a non-empty list of choices (text or numbers)")
            return ()
        return tuple(values)

    def bound(self, data: dict[str, Any], key: str, type_: str, path: str, types: tuple[str, ...]) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if type_ not in types:
            self.fail(f"{path}.{key}", f"applies to {' and '.join(types)} inputs only")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{path}.{key}", "must be a number")
            return None
        return value

    def length(self, data: dict[str, Any], key: str, type_: str, path: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if type_ not in ("string", "secret", "array", "multiselect"):
            self.fail(f"{path}.{key}", "applies to string, secret, array and multiselect inputs only")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(f"{path}.{key}", "must be a whole number, 0 or more")
            return None
        return value

    def pattern(self, data: dict[str, Any], type_: str, path: str) -> str | None:
        value = data.get("pattern")
        if value is None:
            return None
        if type_ not in ("string", "secret"):
            self.fail(f"{path}.pattern", "applies to string and secret inputs only")
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.pattern", "must be a regular expression")
            return None
        try:
            re.compile(value)
        except re.error as exc:
            self.fail(f"{path}.pattern", f"not a regular expression: {exc}")
            return None
        return value

    def items(self, data: dict[str, Any], type_: str, path: str) -> str | None:
        value = data.get("items")
        if value is None:
            return None
        if type_ != "array":
            self.fail(f"{path}.items", "applies to array inputs only")
            return None
        if value not in ITEM_TYPES:
            self.fail(f"{path}.items", f"must be one of {', '.join(ITEM_TYPES)}")
            return None
        return str(value)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def from_text(flow: Flow, given: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    """`given` with the inputs among `names` that came as text (a query string, `flowmill run
    --arg k=v`) read as their declared type: `3` for an integer, `true` for a boolean, JSON
    for json, array and multiselect. Text that does not read is left as it is, for
    `check_inputs` to name."""
    specs = {spec.name: spec for spec in flow.inputs}
    read = dict(given)
    for name in names:
        spec, value = specs.get(name), read.get(name)
        if spec is None or not isinstance(value, str):
            continue
        text = value.strip()
        try:
            if spec.type == "integer" and re.fullmatch(r"[+-]?\d{1,18}", text):
                read[name] = int(text)
            elif spec.type == "number":
                read[name] = float(text) if not re.fullmatch(r"[+-]?\d{1,18}", text) else int(text)
            elif spec.type == "boolean" and text.lower() in _TRUE + _FALSE:
                read[name] = text.lower() in _TRUE
            elif spec.type in ("json", "array", "multiselect"):
                read[name] = json.loads(text)
        except ValueError:
            pass
    return read
