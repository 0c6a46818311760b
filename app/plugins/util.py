"""`util.*`: the small steps of a flow — log, set a value, sleep, assert, nothing, a UUID, the time.

Each is quick and never blocks, so each is `async def` and runs on the event loop: a thread
hop would cost more than the work (a flow of 40 `util.*` tasks is one of the benchmarks)."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from typing import Any

from app.plugins.durations import duration_schema, seconds
from app.plugins.registry import Manifest, Plugin, TaskContext, TaskFailed
from app.plugins.schema import EMPTY, anything, obj, text

MAX_SLEEP_S = 3600.0  # util.sleep holds the execution in memory; flow.sleep waits durably for longer
LEVELS = ("debug", "info", "warning", "error")
# Strings that read as false, for a condition rendered into text ("{{ a }} == ..." gives text).
FALSE_TEXT = frozenset({"", "false", "0", "no", "off", "none", "null"})


async def log_message(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Write the message (JSON when it is not text) to the task's log, prefixed by its level
    unless it is `info`."""
    message = properties["message"]
    line = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False, default=str)
    level = properties["level"]
    ctx.log(line if level == "info" else f"{level.upper()} {line}")
    return {}


async def set_value(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"value": properties["value"]}


async def sleep(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Wait in-process; stop at once when the execution is cancelled."""
    wait = seconds(properties["duration"], "duration")
    if wait > MAX_SLEEP_S:
        raise TaskFailed("InvalidProperties", f"properties.duration: util.sleep waits at most {MAX_SLEEP_S:g} s "
                                              "(flow.sleep waits longer, durably)")
    if ctx.cancelled():
        raise TaskFailed("Cancelled", "the execution was cancelled")
    try:
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=wait)
    except asyncio.TimeoutError:
        return {}
    raise TaskFailed("Cancelled", "the execution was cancelled during the sleep")


def truthy(value: Any) -> bool:
    """Python's truth, except that text reading as false ("false", "0", "no", "off", "none",
    "null", "") is false."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXT
    return bool(value)


async def check(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fail the task unless the (already rendered) condition is truthy."""
    condition = properties["condition"] if "condition" in properties else properties["that"]
    if not truthy(condition):
        raise TaskFailed("AssertionFailed", properties.get("message") or f"the assertion failed: {condition!r}")
    return {}


async def noop(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {}


async def new_uuid(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4())}


async def now(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    moment = datetime.datetime.now(datetime.timezone.utc)
    return {"now": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "epochMs": int(moment.timestamp() * 1000)}


_CONDITION = anything("the condition, rendered: true unless false, null, 0, empty, or text such as 'false'")
_ASSERT = obj(
    {"condition": _CONDITION, "that": {**_CONDITION, "description": "another name for condition"},
     "message": text("the failure's message")},
    oneOf=[{"required": ["condition"]}, {"required": ["that"]}],
)

PLUGINS = [
    Plugin(Manifest(
        id="util.log", name="Log", category="util",
        description="Write a message to the execution's log.",
        input_schema=obj({"message": anything("the line to log (a value that is not text is logged as JSON)"),
                          "level": {"enum": list(LEVELS), "default": "info"}}, required=["message"]),
        output_schema=EMPTY,
    ), log_message),
    Plugin(Manifest(
        id="util.set", name="Set a value", category="util",
        description="Make a value (rendered from templates) the task's output `value`, for later tasks.",
        input_schema=obj({"value": anything("any value")}, required=["value"]),
        output_schema=obj({"value": anything("the value given")}, required=["value"]),
    ), set_value),
    Plugin(Manifest(
        id="util.sleep", name="Sleep", category="util",
        description=f"Wait in memory for a short time (at most {MAX_SLEEP_S:g} s); stops at once when the execution "
                    "is cancelled. flow.sleep waits durably, holding nothing.",
        input_schema=obj({"duration": duration_schema("how long to wait")}, required=["duration"]),
        output_schema=EMPTY,
    ), sleep),
    Plugin(Manifest(
        id="util.assert", name="Assert", category="util",
        description="Fail the task (AssertionFailed) unless `condition` (or `that`) is true.",
        input_schema=_ASSERT, output_schema=EMPTY,
    ), check),
    Plugin(Manifest(
        id="util.noop", name="Do nothing", category="util",
        description="Nothing: a placeholder, or a join point.",
        input_schema=EMPTY, output_schema=EMPTY,
    ), noop),
    Plugin(Manifest(
        id="util.uuid", name="UUID", category="util",
        description="A random UUID (version 4).",
        input_schema=EMPTY,
        output_schema=obj({"uuid": text("a random UUID", format="uuid")}, required=["uuid"]),
    ), new_uuid),
    Plugin(Manifest(
        id="util.now", name="Now", category="util",
        description="The current time, as ISO-8601 text in UTC and as epoch milliseconds.",
        input_schema=EMPTY,
        output_schema=obj({"now": text("ISO-8601, UTC", format="date-time"), "epochMs": {"type": "integer"}},
                          required=["now", "epochMs"]),
    ), now),
]
