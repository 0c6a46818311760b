"""The inputs an execution of a flow is given, checked against the flow's typed `inputs`.

Values arrive as JSON, already typed: the text "3" is not an integer and is not turned into one
(a caller that sends text where a number is wanted has a bug worth hearing about). A datetime
is ISO-8601 text and stays text; it is checked, not converted, so templates see what was sent.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import TYPE_CHECKING, Any

from app.errors import BadRequest

if TYPE_CHECKING:
    from app.flows.model import Flow, FlowInput


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
    from app.flows.model import FlowInput  # only the array check needs the class at run time

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
