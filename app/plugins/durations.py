"""Durations as plugin properties: `"500ms"`, `"2s"`, `"1h30m"`, `"PT1M30S"`, or a number of
seconds — the flow language's grammar (`app.flows.durations`), so a `timeout` reads the same on
a task and in a plugin's properties."""

from __future__ import annotations

from typing import Any

from app.plugins.registry import TaskFailed


def duration_schema(description: str, default: str | float | None = None) -> dict[str, Any]:
    """The JSON Schema of a duration property (the text's grammar is checked when it is read)."""
    schema: dict[str, Any] = {
        "type": ["string", "number"], "minimum": 0,
        "description": f"{description} (a duration: 500ms, 2s, 1m, 1h30m, PT1M, or seconds as a number)",
    }
    if default is not None:
        schema["default"] = default
    return schema


def seconds(value: Any, field: str) -> float:
    """`value` in seconds; TaskFailed("InvalidProperties") naming `properties.<field>` when it
    is not a duration."""
    # Imported here, not at the top: the catalogue (manifests, the plugins API) does not need
    # the flow language, only a plugin that reads a duration does.
    from app.flows.durations import parse_duration

    if isinstance(value, bool):
        raise TaskFailed("InvalidProperties", f"properties.{field}: {value!r} is not a duration")
    try:
        found = parse_duration(value)
    except (ValueError, TypeError) as error:
        raise TaskFailed("InvalidProperties", f"properties.{field}: {error}") from None
    if found < 0:
        raise TaskFailed("InvalidProperties", f"properties.{field}: a duration cannot be negative")
    return found
