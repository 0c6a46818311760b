"""`kv.*`: read, write and delete entries of the workspace's key-value store, which outlive the
execution (the store checks the names: 1-200 characters for a namespace, 1-512 for a key)."""

from __future__ import annotations

from typing import Any

from app.plugins.registry import Manifest, Plugin, TaskContext
from app.plugins.schema import EMPTY, anything, obj, text

_NAMESPACE = text("the namespace", minLength=1, maxLength=200)
_KEY = text("the key", minLength=1, maxLength=512)


async def get(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """The entry's value, or `default` (null when not given) when there is none. An entry that
    holds null reads as missing: the context answers None for both."""
    value = await ctx.kv_get(properties["namespace"], properties["key"])
    if value is None:
        return {"value": properties.get("default"), "found": False}
    return {"value": value, "found": True}


async def put(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    await ctx.kv_set(properties["namespace"], properties["key"], properties["value"])
    return {}


async def delete(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"deleted": bool(await ctx.kv_delete(properties["namespace"], properties["key"]))}


PLUGINS = [
    Plugin(Manifest(
        id="kv.get", name="Get a KV entry", category="kv",
        description="Read an entry of the key-value store; `found` says whether it exists.",
        input_schema=obj({"namespace": _NAMESPACE, "key": _KEY,
                          "default": anything("the value when there is no entry (default null)")},
                         required=["namespace", "key"]),
        output_schema=obj({"value": anything("the entry's value, or the default"), "found": {"type": "boolean"}},
                          required=["value", "found"]),
    ), get),
    Plugin(Manifest(
        id="kv.set", name="Set a KV entry", category="kv",
        description="Create or replace an entry of the key-value store with any JSON value.",
        input_schema=obj({"namespace": _NAMESPACE, "key": _KEY, "value": anything("the value to store")},
                         required=["namespace", "key", "value"]),
        output_schema=EMPTY,
    ), put),
    Plugin(Manifest(
        id="kv.delete", name="Delete a KV entry", category="kv",
        description="Remove an entry of the key-value store; `deleted` is false when there was none.",
        input_schema=obj({"namespace": _NAMESPACE, "key": _KEY}, required=["namespace", "key"]),
        output_schema=obj({"deleted": {"type": "boolean"}}, required=["deleted"]),
    ), delete),
]
