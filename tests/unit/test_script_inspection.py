"""Reading a script without running it: its schema and its requirements."""

from __future__ import annotations

import pytest

from app.runtimes.python.deps import infer_requirements
from app.runtimes.python.schema import ScriptSyntaxError, inspect_script

SOURCE = '''
import datetime
from typing import Literal, Optional, TypedDict

class postgresql(TypedDict):
    host: str

class Point(TypedDict):
    x: int
    y: Optional[int]

def preprocessor(event):
    return event

def main(name: str, n: int = 3, ratio: float = 0.5, on: bool = False, data: bytes = b"",
         when: datetime.datetime = None, day: "datetime.date" = None, mode: Literal["a", "b"] = "a",
         db: postgresql = None, p: Point = None, d: dict = {"a": 1}, l: list[int] = [1, 2],
         o: Optional[float] = None, u: int | None = None, untyped=5, *, k: str):
    return name
'''


def test_the_schema_of_main() -> None:
    info = inspect_script(SOURCE)
    props = info.schema["properties"]
    assert info.schema["required"] == ["name", "k"] and info.schema["order"][0] == "name"
    assert props["name"] == {"type": "string", "description": ""}
    assert props["n"]["type"] == "integer" and props["n"]["default"] == 3
    assert props["ratio"]["type"] == "number" and props["on"]["type"] == "boolean"
    assert props["data"]["contentEncoding"] == "base64"
    assert props["when"]["format"] == "date-time" and props["day"]["format"] == "date"
    assert props["mode"]["enum"] == ["a", "b"] and props["mode"]["type"] == "string"
    assert props["db"]["format"] == "resource-postgresql"
    assert props["p"]["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}} and props["p"]["required"] == ["x"]
    assert props["d"]["default"] == {"a": 1} and props["l"] == {"type": "array", "items": {"type": "integer"}, "default": [1, 2], "description": ""}
    assert props["o"]["type"] == "number" and props["u"]["type"] == "integer"
    assert props["untyped"]["type"] == "integer"
    assert info.has_preprocessor and not info.is_async and info.resource_types == ["postgresql"]


@pytest.mark.parametrize("source, line, column", [("def main(:\n  pass", 1, 10), ("x = 1\n", 1, 0), ("def main():\n  return (\n", 2, 10)])
def test_errors_say_where(source: str, line: int, column: int) -> None:
    with pytest.raises(ScriptSyntaxError) as raised:
        inspect_script(source)
    assert (raised.value.line, raised.value.column) == (line, column)


def test_requirements_from_imports() -> None:
    source = (
        "import os, json\nimport yaml\nfrom PIL import Image\nimport sklearn.linear_model\nfrom google.cloud import storage\n"
        "import wmill\nfrom . import sibling\nimport humanize\ndef main():\n    import bs4\n"
    )
    assert infer_requirements(source) == ["beautifulsoup4", "google-cloud-storage", "humanize", "pillow", "pyyaml", "scikit-learn"]
    block = "# requirements:\n# requests==2.32.3\n#humanize>=4\nimport yaml\ndef main(): pass\n"
    assert infer_requirements(block) == ["requests==2.32.3", "humanize>=4"]
