"""The JSON Schema pieces the built-in manifests are written with.

Properties are closed (`additionalProperties: false`): a misspelt property (`mesage`) is a
validation error when the flow is saved, not a silently ignored key at run time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EMPTY: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def obj(properties: dict[str, Any], required: Iterable[str] = (), **more: Any) -> dict[str, Any]:
    """A closed object with these properties, `required` ones first to be named."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(more)
    return schema


def anything(description: str) -> dict[str, Any]:
    """Any JSON value."""
    return {"description": description}


def text(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def string_map(description: str) -> dict[str, Any]:
    """An object of strings (headers, environment variables)."""
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}
