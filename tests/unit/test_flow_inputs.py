"""A flow's typed inputs: declared in the YAML (defaults checked when it is read) and checked
for each execution, with every bad field named."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import BadRequest
from app.flows.inputs import check_inputs, secret_inputs
from app.flows.model import FlowInvalid, load

INPUTS = """
name: typed
namespace: tests
inputs:
  - {name: s, type: string, minLength: 2, maxLength: 5, pattern: "[a-z]+"}
  - {name: i, type: integer, min: 1, max: 10}
  - {name: n, type: number, min: -1.5, max: 2.5}
  - {name: b, type: boolean}
  - {name: sel, type: select, values: [red, green, 3]}
  - {name: multi, type: multiselect, values: [a, b, c], maxLength: 2}
  - {name: j, type: json}
  - {name: when, type: datetime}
  - {name: arr, type: array, items: integer, minLength: 1, maxLength: 3}
  - {name: anything, type: array}
  - {name: token, type: secret, minLength: 4}
tasks:
  - {name: x, type: util.noop}
"""

GOOD: dict[str, Any] = {
    "s": "abc", "i": 3, "n": 1.25, "b": True, "sel": "green", "multi": ["a", "c"], "j": {"deep": [1, {"x": None}]},
    "when": "2024-05-01T12:00:00Z", "arr": [1, 2], "anything": ["x", 1, None], "token": "hunter22",
}


def flow_with(*lines: str) -> Any:
    body = "\n".join(f"  - {line}" for line in lines)
    return load(f"name: f\nnamespace: t\ninputs:\n{body}\ntasks:\n  - {{name: x, type: util.noop}}\n")


def bad(flow: Any, given: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(BadRequest) as caught:
        check_inputs(flow, given)
    assert caught.value.status == 400
    return {e["path"]: e["message"] for e in caught.value.details["errors"]}


def test_good_values_of_every_type_pass_unchanged() -> None:
    flow = load(INPUTS)
    assert check_inputs(flow, dict(GOOD)) == GOOD


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("s", 12, "must be text, not a whole number"),
        ("s", "a", "at least 2 characters"),
        ("s", "abcdef", "at most 5 characters"),
        ("s", "AB", "does not match the pattern [a-z]+"),
        ("i", "3", "must be a whole number, not text"),  # not converted
        ("i", 2.5, "must be a whole number"),
        ("i", True, "must be a whole number, not a boolean"),
        ("i", 0, "must be 1 or more"),
        ("i", 11, "must be 10 or less"),
        ("n", "1.5", "must be a number, not text"),
        ("n", -2, "must be -1.5 or more"),
        ("n", 3, "must be 2.5 or less"),
        ("b", "true", "must be true or false, not text"),
        ("b", 1, "must be true or false"),
        ("sel", "blue", "must be one of 'red', 'green', 3"),
        ("sel", True, "must be one of"),
        ("multi", "a", "must be a list of choices"),
        ("multi", ["a", "z"], "item 1: must be one of"),
        ("multi", ["a", "a"], "a choice is given twice"),
        ("multi", ["a", "b", "c"], "at most 2 choices"),
        ("when", "yesterday", "is not an ISO-8601 date and time"),
        ("when", 1714564800, "must be an ISO-8601 date and time"),
        ("arr", "1,2", "must be a list, not text"),
        ("arr", [], "at least 1 items"),
        ("arr", [1, 2, 3, 4], "at most 3 items"),
        ("arr", [1, "2"], "item 1: must be a whole number, not text"),
        ("token", 1234, "must be text"),
        ("token", "abc", "at least 4 characters"),
    ],
)
def test_each_type_refuses_what_does_not_fit(name: str, value: Any, message: str) -> None:
    flow = load(INPUTS)
    found = bad(flow, {**GOOD, name: value})
    assert list(found) == [f"inputs.{name}"]
    assert message in found[f"inputs.{name}"]


def test_numbers_written_as_floats_are_whole_numbers_when_they_are_whole() -> None:
    flow = flow_with("{name: i, type: integer}", "{name: sel, type: select, values: [1, 2]}")
    assert check_inputs(flow, {"i": 3.0, "sel": 2.0}) == {"i": 3, "sel": 2.0}


def test_datetimes_in_iso_forms() -> None:
    flow = flow_with("{name: when, type: datetime}")
    for text in ("2024-05-01", "2024-05-01T12:00:00", "2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00.123Z"):
        assert check_inputs(flow, {"when": text}) == {"when": text}


def test_every_bad_field_is_named_at_once_and_unknown_inputs_are_errors() -> None:
    flow = load(INPUTS)
    found = bad(flow, {"s": 1, "i": "x", "nobody": 1})
    assert set(found) == {"inputs.s", "inputs.i", "inputs.nobody"}
    assert found["inputs.nobody"].startswith("unknown input")


def test_required_defaults_and_absent_optional_inputs() -> None:
    flow = flow_with(
        "{name: must, type: string, required: true}",
        "{name: fallback, type: integer, required: true, default: 5}",
        "{name: maybe, type: string}",
        "{name: colour, type: select, values: [red, blue], default: blue}",
    )
    assert bad(flow, {}) == {"inputs.must": "required"}
    assert bad(flow, {"must": None}) == {"inputs.must": "required"}
    assert check_inputs(flow, {"must": "x"}) == {"must": "x", "fallback": 5, "maybe": None, "colour": "blue"}
    assert check_inputs(flow, {"must": "x", "fallback": 7})["fallback"] == 7


def test_inputs_must_be_an_object() -> None:
    with pytest.raises(BadRequest):
        check_inputs(flow_with("{name: a, type: string}"), ["a"])  # type: ignore[arg-type]
    assert check_inputs(flow_with("{name: a, type: string}"), None) == {"a": None}


def test_secret_values_never_appear_in_errors() -> None:
    flow = flow_with("{name: token, type: secret, pattern: 'tok-.*'}")
    found = bad(flow, {"token": "sup3r-s3cret"})
    assert "sup3r-s3cret" not in found["inputs.token"]


def test_secret_inputs_are_named() -> None:
    assert secret_inputs(load(INPUTS)) == {"token"}


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        ("{name: a, type: integer, default: '3'}", "inputs[0].default", "does not fit the input: must be a whole number, not text"),
        ("{name: a, type: integer, min: 5, default: 1}", "inputs[0].default", "must be 5 or more"),
        ("{name: a, type: strin}", "inputs[0].type", "'strin' is not an input type"),
        ("{type: string}", "inputs[0].name", "required"),
        ("{name: a}", "inputs[0].type", "required: one of string"),
        ("{name: a, type: select}", "inputs[0].values", "required for a select input"),
        ("{name: a, type: select, values: []}", "inputs[0].values", "required for a select input"),
        ("{name: a, type: string, values: [x]}", "inputs[0].values", "applies to select and multiselect"),
        ("{name: a, type: string, min: 1}", "inputs[0].min", "applies to integer and number"),
        ("{name: a, type: integer, min: x}", "inputs[0].min", "must be a number"),
        ("{name: a, type: integer, min: 5, max: 1}", "inputs[0].max", "must not be below its minimum"),
        ("{name: a, type: integer, maxLength: 3}", "inputs[0].maxLength", "applies to string, secret, array and multiselect"),
        ("{name: a, type: string, minLength: -1}", "inputs[0].minLength", "0 or more"),
        ("{name: a, type: string, pattern: '('}", "inputs[0].pattern", "not a regular expression"),
        ("{name: a, type: integer, pattern: 'x'}", "inputs[0].pattern", "applies to string and secret"),
        ("{name: a, type: array, items: date}", "inputs[0].items", "must be one of string"),
        ("{name: a, type: string, items: string}", "inputs[0].items", "applies to array"),
        ("{name: a, type: string, required: maybe}", "inputs[0].required", "must be true or false"),
        ("{name: a, type: string, colour: red}", "inputs[0].colour", "unknown field 'colour'"),
        ("{name: a, type: datetime, default: tomorrow}", "inputs[0].default", "is not an ISO-8601"),
        ("{name: a, type: array, items: boolean, default: [true, 1]}", "inputs[0].default", "item 1: must be true or false"),
    ],
)
def test_bad_input_declarations_are_structural_errors(line: str, path: str, message: str) -> None:
    with pytest.raises(FlowInvalid) as caught:
        flow_with(line)
    found = {e.path: e.message for e in caught.value.errors}
    assert message in found[path], found


def test_duplicate_input_names() -> None:
    with pytest.raises(FlowInvalid) as caught:
        flow_with("{name: a, type: string}", "{name: a, type: integer}")
    assert [(e.path, e.message) for e in caught.value.errors] == [("inputs[1].name", "duplicate input name 'a'")]


def test_a_datetime_default_written_as_a_yaml_timestamp_stays_text() -> None:
    flow = flow_with("{name: when, type: datetime, default: 2024-05-01T10:00:00Z}")
    assert flow.inputs[0].default == "2024-05-01T10:00:00Z"
