"""Forms from input schemas: what each source declares becomes the field it should, and typed
text reads back as the value the API wants."""

from __future__ import annotations

import pytest

from tui.widgets.form import (
    NO_DEFAULT,
    Field,
    fields_from_declarations,
    fields_from_flow,
    fields_from_schema,
    read_text,
)


def test_a_scripts_schema_in_mains_order() -> None:
    schema = {
        "properties": {
            "when": {"type": "string", "format": "date-time", "default": None},
            "name": {"type": "string"},
            "n": {"type": "integer", "default": 3},
            "colour": {"type": "string", "enum": ["red", "blue"], "default": "red"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
            "picks": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "conf": {"type": "object", "default": {}},
            "db": {"type": "object", "format": "resource-postgresql", "default": None},
            "maybe": {"type": ["number", "null"]},
        },
        "required": ["name"],
        "order": ["name", "n", "colour", "tags", "picks", "conf", "when", "db", "maybe"],
    }
    fields = fields_from_schema(schema)
    assert [(f.name, f.type, f.required) for f in fields] == [
        ("name", "string", True), ("n", "integer", False), ("colour", "select", False), ("tags", "array", False),
        ("picks", "multiselect", False), ("conf", "json", False), ("when", "datetime", False), ("db", "string", False),
        ("maybe", "number", False)]
    assert fields[0].default is NO_DEFAULT and fields[1].default == 3 and fields[2].choices == ("red", "blue")
    assert "$res:" in fields[7].hint


def test_a_flows_inputs_and_an_approvals_form() -> None:
    fields = fields_from_flow("name: x\nnamespace: y\ninputs:\n  - {name: who, type: string, required: true}\n"
                              "  - {name: ids, type: array, items: integer}\n  - {name: plain}\ntasks: []\n")
    assert [(f.name, f.type, f.required, f.items) for f in fields] == [
        ("who", "string", True, None), ("ids", "array", False, "integer"), ("plain", "string", False, None)]
    assert fields_from_flow("not: [valid") == [] and fields_from_flow("- a list") == []
    form = fields_from_declarations([{"name": "level", "type": "select", "values": ["low", "high"]}, {"nope": 1}])
    assert form == [Field("level", "select", choices=("low", "high"))]


@pytest.mark.parametrize("field, text, value", [
    (Field("n", "integer"), "42", 42),
    (Field("x", "number"), "0.5", 0.5),
    (Field("j", "json"), '{"a": [1]}', {"a": [1]}),
    (Field("l", "array", items="string"), "a, b ,c", ["a", "b", "c"]),
    (Field("l", "array", items="integer"), "1,2", [1, 2]),
    (Field("l", "array"), "[1, \"x\"]", [1, "x"]),
    (Field("d", "datetime"), "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
    (Field("s", "string"), "  kept  ", "  kept  "),
])
def test_text_reads_back_typed(field: Field, text: str, value: object) -> None:
    assert read_text(field, text) == value


@pytest.mark.parametrize("field, text, message", [
    (Field("n", "integer"), "3.5", "whole number"),
    (Field("x", "number"), "many", "a number"),
    (Field("j", "json"), "{a}", "not valid JSON"),
    (Field("l", "array", items="json"), "a, b", "JSON list"),
    (Field("d", "datetime"), "tomorrow", "a date"),
])
def test_text_that_does_not_fit_says_why(field: Field, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_text(field, text)
