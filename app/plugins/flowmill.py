"""`flowmill.*`: Flowmill's own objects from a flow — for now, start a saved script."""

from __future__ import annotations

from typing import Any

from app.plugins.registry import Manifest, Plugin, TaskContext, TaskFailed
from app.plugins.schema import anything, obj, text


async def run_script(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Start the script as a run of its own (its job), and wait for its result unless `wait` is
    false; a run waited for that does not end in SUCCESS fails the task."""
    started = await ctx.run_script(properties["path"], properties["args"], properties["wait"])
    if properties["wait"] and started["status"] != "SUCCESS":
        error = started.get("error") or started.get("result")
        raise TaskFailed("ScriptFailed", f"run {started['jobId']} of {properties['path']} ended {started['status']}"
                                         + (f": {error}" if error else ""))
    outputs = {"jobId": started["jobId"], "status": started["status"]}
    if "result" in started:
        outputs["result"] = started["result"]
    return outputs


PLUGINS = [
    Plugin(Manifest(
        id="flowmill.run_script", name="Run a script", category="flowmill",
        description="Start a saved script as a run of its own, with the flow's identity; by default wait for it "
                    "and return its result (wait: false returns at once with the job's id).",
        input_schema=obj(
            {"path": text("the script's path, e.g. f/billing/charge", minLength=1),
             "args": {"type": "object", "default": {}, "description": "main's arguments by name"},
             "wait": {"type": "boolean", "default": True, "description": "wait for the run to end"}},
            required=["path"],
        ),
        output_schema=obj(
            {"jobId": text("the run's id"), "status": text("the run's status: SUCCESS when waited for, else QUEUED ..."),
             "result": anything("main's result (when waited for)")},
            required=["jobId", "status"],
        ),
    ), run_script),
]
