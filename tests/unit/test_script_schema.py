"""A script's schema, read from its source without running it, in the form Windmill produces."""

from __future__ import annotations

from typing import Any

import pytest

from app.runtimes.python.schema import SCHEMA_DIALECT, ScriptSyntaxError, inspect_script


def arg(annotation: str, prelude: str = "") -> dict[str, Any]:
    """The schema of a lone argument `x` annotated so."""
    schema: dict[str, Any] = inspect_script(f"{prelude}\ndef main(x: {annotation}):\n    return x\n").schema
    return dict(schema["properties"]["x"])


@pytest.mark.parametrize("annotation, schema", [
    ("str", {"type": "string"}),
    ("int", {"type": "integer"}),
    ("float", {"type": "number"}),
    ("bool", {"type": "boolean"}),
    ("dict", {"type": "object"}),
    ("bytes", {"type": "string", "contentEncoding": "base64"}),
    ("datetime", {"type": "string", "format": "date-time"}),
    ("date", {"type": "string", "format": "date"}),
    ("list", {"type": "array", "items": {"type": "string"}}),  # Windmill's reading of a bare list
    ("list[int]", {"type": "array", "items": {"type": "integer"}}),
    ("list[list[float]]", {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
    ("list[dict]", {"type": "array", "items": {"type": "object"}}),
])
def test_builtin_annotations(annotation: str, schema: dict[str, Any]) -> None:
    assert arg(annotation) == {**schema, "description": ""}


@pytest.mark.parametrize("prelude, annotation, schema", [
    ("from typing import Dict", "Dict[str, int]", {"type": "object"}),
    ("from typing import List", "List[str]", {"type": "array", "items": {"type": "string"}}),
    ("import typing", "typing.List[int]", {"type": "array", "items": {"type": "integer"}}),
    ("import typing as t", "t.Dict[str, t.Any]", {"type": "object"}),
    ("import datetime", "datetime.datetime", {"type": "string", "format": "date-time"}),
    ("import datetime", "datetime.date", {"type": "string", "format": "date"}),
    ("from datetime import datetime", "datetime", {"type": "string", "format": "date-time"}),
    ("import datetime as dt", "dt.date", {"type": "string", "format": "date"}),
    ("from typing import Annotated", "Annotated[int, 'a count']", {"type": "integer"}),
    ("", "'datetime.date'", {"type": "string", "format": "date"}),  # a string annotation
])
def test_typing_and_datetime_forms(prelude: str, annotation: str, schema: dict[str, Any]) -> None:
    assert arg(annotation, prelude) == {**schema, "description": ""}


@pytest.mark.parametrize("prelude, annotation", [
    ("from typing import Any", "Any"),
    ("import wmill", "wmill.S3Object"),
    ("class Config:\n    pass", "Config"),
    ("", "'wmill.Resource'"),
    ("from typing import Union", "Union[int, str]"),
    ("", "int | str"),
])
def test_what_is_not_known_has_no_type(prelude: str, annotation: str) -> None:
    assert arg(annotation, prelude) == {"description": ""}


def test_optional_arguments_are_not_required() -> None:
    source = (
        "import typing\nfrom typing import Optional, Union\n"
        "def main(a: Optional[int], b: str | None, c: None | float, d: Union[bool, None], e: typing.Optional[str],\n"
        "         f: int, g: int = 2):\n    pass\n"
    )
    schema = inspect_script(source).schema
    props = schema["properties"]
    assert props["a"] == {"type": "integer", "description": ""}
    assert props["b"] == {"type": "string", "description": ""}
    assert props["c"] == {"type": "number", "description": ""}
    assert props["d"] == {"type": "boolean", "description": ""}
    assert props["e"] == {"type": "string", "description": ""}
    assert schema["required"] == ["f"]


@pytest.mark.parametrize("annotation, schema, required", [
    ('Literal["a", "b"]', {"type": "string", "enum": ["a", "b"]}, True),
    ("Literal[1, 2, -3]", {"type": "integer", "enum": [1, 2, -3]}, True),
    ('Literal["a", 1]', {"enum": ["a", 1]}, True),
    ('Optional[Literal["x", "y"]]', {"type": "string", "enum": ["x", "y"]}, False),
    ('Literal["x", None]', {"type": "string", "enum": ["x"]}, False),
])
def test_literal_enums(annotation: str, schema: dict[str, Any], required: bool) -> None:
    info = inspect_script(f"from typing import Literal, Optional\ndef main(x: {annotation}): pass\n")
    assert info.schema["properties"]["x"] == {**schema, "description": ""}
    assert info.schema["required"] == (["x"] if required else [])


def test_the_whole_schema_has_windmills_form() -> None:
    info = inspect_script("def main(name: str, count: int = 3):\n    return name * count\n")
    assert info.schema == {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": ""},
            "count": {"type": "integer", "default": 3, "description": ""},
        },
        "required": ["name"],
        "order": ["name", "count"],
    }
    assert SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"


def test_defaults_are_literal_values_and_keep_the_order() -> None:
    source = (
        "import datetime\n"
        "def main(z: dict = {'a': 1, 'b': [True, None]}, y: list[int] = [1, 2], x: str = 'hi', w: float = -1.5,\n"
        "         v: bytes = b'hi', u: tuple = (1, 2), t: datetime.datetime = datetime.datetime.now(),\n"
        "         s: set = {1, 2}, r: dict = dict(a=1), q: int = None):\n    pass\n"
    )
    schema = inspect_script(source).schema
    props = schema["properties"]
    assert schema["order"] == ["z", "y", "x", "w", "v", "u", "t", "s", "r", "q"]
    assert schema["required"] == []  # every one has a default, literal or not
    assert props["z"] == {"type": "object", "default": {"a": 1, "b": [True, None]}, "description": ""}
    assert props["y"] == {"type": "array", "items": {"type": "integer"}, "default": [1, 2], "description": ""}
    assert props["x"]["default"] == "hi" and props["w"]["default"] == -1.5
    assert props["v"]["default"] == "aGk="  # bytes travel as base64, as the schema says
    assert props["u"]["default"] == [1, 2]
    assert props["t"] == {"type": "string", "format": "date-time", "description": ""}  # a call: no default shown
    assert "default" not in props["s"] and "default" not in props["r"]
    assert props["q"] == {"type": "integer", "default": None, "description": ""}


def test_untyped_arguments_take_their_type_from_the_default() -> None:
    source = "def main(a, b=1, c=2.5, d='s', e=True, f={'k': 1}, g=[1, 2], h=[], i=None, j=object()):\n    pass\n"
    schema = inspect_script(source).schema
    props = {name: {k: v for k, v in p.items() if k not in ("default", "description")}
             for name, p in schema["properties"].items()}
    assert props == {
        "a": {}, "b": {"type": "integer"}, "c": {"type": "number"}, "d": {"type": "string"},
        "e": {"type": "boolean"}, "f": {"type": "object"}, "g": {"type": "array", "items": {"type": "integer"}},
        "h": {"type": "array", "items": {"type": "string"}}, "i": {}, "j": {},
    }
    assert schema["required"] == ["a"]


def test_a_bare_list_learns_its_items_from_its_default() -> None:
    props = inspect_script("def main(a: list = [1, 2], b: list = ['x']):\n    pass\n").schema["properties"]
    assert props["a"]["items"] == {"type": "integer"} and props["b"]["items"] == {"type": "string"}


def test_star_arguments_are_ignored_and_keyword_only_ones_kept() -> None:
    schema = inspect_script("def main(a: int, /, b: str, *args, c: bool, d: int = 1, **kwargs):\n    pass\n").schema
    assert schema["order"] == ["a", "b", "c", "d"]
    assert schema["required"] == ["a", "b", "c"]


def test_lowercase_typeddicts_are_resource_types() -> None:
    source = (
        "from typing import TypedDict, Optional\n"
        "class postgresql(TypedDict):\n    host: str\n    port: int\n"
        "class s3(TypedDict):\n    bucket: str\n"
        "def main(db: postgresql, store: Optional[s3] = None, other: postgresql | None = None):\n    pass\n"
    )
    info = inspect_script(source)
    props = info.schema["properties"]
    assert props["db"] == {"type": "object", "format": "resource-postgresql", "description": ""}
    assert props["store"] == {"type": "object", "format": "resource-s3", "default": None, "description": ""}
    assert info.resource_types == ["postgresql", "s3"]
    assert info.schema["required"] == ["db"]


def test_the_older_windmill_resource_alias() -> None:
    info = inspect_script("postgresql = dict\ndef main(db: postgresql):\n    pass\n")
    assert info.schema["properties"]["db"]["format"] == "resource-postgresql"
    assert info.resource_types == ["postgresql"]


def test_other_typeddicts_are_objects_with_their_fields() -> None:
    source = (
        "import typing\nfrom typing import Optional, TypedDict\nfrom typing_extensions import NotRequired\n"
        "class Point(TypedDict):\n    x: int\n    y: Optional[int]\n    label: NotRequired[str]\n"
        "class Point3(Point):\n    z: float\n"
        "class Loose(typing.TypedDict, total=False):\n    name: str\n    next: 'Loose'\n"
        "def main(p: Point3, loose: Loose):\n    pass\n"
    )
    props = inspect_script(source).schema["properties"]
    assert props["p"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "label": {"type": "string"},
                       "z": {"type": "number"}},
        "required": ["x", "z"],
        "description": "",
    }
    assert props["loose"]["required"] == [] and props["loose"]["properties"]["next"] == {"type": "object"}


def test_a_class_that_is_not_a_typeddict_is_no_resource() -> None:
    info = inspect_script("class postgresql:\n    pass\ndef main(db: postgresql):\n    pass\n")
    assert info.schema["properties"]["db"] == {"description": ""} and info.resource_types == []


@pytest.mark.parametrize("source, has_preprocessor, is_async", [
    ("def main():\n    pass\n", False, False),
    ("async def main():\n    pass\n", False, True),
    ("def preprocessor(event):\n    return event\ndef main():\n    pass\n", True, False),
    ("async def preprocessor(event):\n    return event\nasync def main():\n    pass\n", True, True),
    # only top-level functions count
    ("class A:\n    def preprocessor(self):\n        pass\ndef main():\n    def preprocessor():\n        pass\n",
     False, False),
])
def test_preprocessor_and_async_are_detected(source: str, has_preprocessor: bool, is_async: bool) -> None:
    info = inspect_script(source)
    assert (info.has_preprocessor, info.is_async) == (has_preprocessor, is_async)


@pytest.mark.parametrize("source, line, column", [
    ("def main(:\n    pass\n", 1, 10),
    ("import os\n\ndef main():\n    return (\n", 4, 12),
    ("def main():\n  x = 1\n    y = 2\n", 3, 4),  # unexpected indent
    ("def main():\n    pass\nreturn 1\n", 3, 1),  # seen only by the compiler, still never run
    ("def main(a, a):\n    pass\n", 1, 13),
])
def test_syntax_errors_say_where(source: str, line: int, column: int) -> None:
    with pytest.raises(ScriptSyntaxError) as raised:
        inspect_script(source)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert raised.value.message and f"line {line}" in str(raised.value)


@pytest.mark.parametrize("source", [
    "x = 1\n",
    "def helper():\n    pass\n",
    "class A:\n    def main(self):\n        pass\n",
    "if True:\n    def main():\n        pass\n",
    "main = lambda: 1\n",
])
def test_no_top_level_main_is_an_error(source: str) -> None:
    with pytest.raises(ScriptSyntaxError) as raised:
        inspect_script(source)
    assert "main" in raised.value.message
    assert (raised.value.line, raised.value.column) == (1, 0)


def test_the_script_is_never_run(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\ndef main(x: int = len('abc')):\n    return x\n"
    info = inspect_script(source)
    assert not marker.exists()
    assert info.schema["properties"]["x"] == {"type": "integer", "description": ""}
