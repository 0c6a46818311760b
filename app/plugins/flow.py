"""`flow.*`: the control-flow types — manifests only (`control=True`), the flow runner runs them.

Their nested task lists (`tasks`, `then`, `else`, `cases`, and `flow.switch`'s `default`) are
not properties: the flow model moves them into `Task.children` before the properties are
checked, so the input schemas below leave them out (and, being closed, refuse them).
"""

from __future__ import annotations

from typing import Any

from app.plugins.durations import duration_schema
from app.plugins.registry import Manifest, Plugin
from app.plugins.schema import EMPTY, anything, obj, text

_CONCURRENCY = {"type": "integer", "minimum": 1, "description": "how many run at once"}
_CONDITION = {"type": ["string", "boolean"], "description": "a template such as \"{{ outputs.check.value > 2 }}\""}
_ROLE = {"enum": ["viewer", "executor", "editor", "admin"]}
_FORM_FIELD = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "type": {"type": "string"},
                   "description": {"type": "string"}, "required": {"type": "boolean"},
                   "values": {"type": "array", "description": "the choices of a select"}, "default": {}},
    "description": "a field of the approval form, typed like a flow input (text when no type is given)",
}


def control(type_id: str, name: str, description: str, properties: dict[str, Any],
            required: tuple[str, ...] = (), outputs: dict[str, Any] = EMPTY) -> Plugin:
    """The manifest of a control-flow type, as a Plugin without a run function."""
    return Plugin(Manifest(
        id=type_id, name=name, category="flow", description=description,
        input_schema=obj(properties, required) if properties else EMPTY, output_schema=outputs, control=True,
    ))


PLUGINS = [
    control("flow.sequential", "Sequence", "Run `tasks` one after the other.", {}),
    control("flow.parallel", "Parallel", "Run `tasks` at the same time, at most `concurrency` at once (default: all).",
            {"concurrency": _CONCURRENCY}),
    control("flow.if", "If", "Run `then` when the condition is true, else `else`.",
            {"condition": _CONDITION}, ("condition",),
            obj({"branch": {"enum": ["then", "else", None], "description": "the branch run (null: it had no tasks)"}},
                ["branch"])),
    control("flow.switch", "Switch", "Run the tasks of `cases` under the key equal to `value`, else `default`.",
            {"value": anything("the value to match against the keys of cases (compared as text)")}, ("value",),
            obj({"case": text("the key of the case run, or 'default'")}, ["case"])),
    control("flow.foreach", "For each", "Run `tasks` once per item of `items` (`item` and `index` in scope), "
            "at most `concurrency` at once (default 1: in order).",
            {"items": {"type": ["array", "string", "object"],
                       "description": "the list to go through (JSON text of one too; an object: its [key, value] pairs)"},
             "concurrency": _CONCURRENCY},
            ("items",), obj({"iterations": {"type": "integer"}}, ["iterations"])),
    control("flow.loop_until", "Loop until", "Run `tasks`, then again after `interval`, until the condition is "
            "true, or `maxIterations` or `maxDuration` is reached (a failure).",
            {"condition": _CONDITION, "interval": duration_schema("the wait between iterations", 0),
             "maxIterations": {"type": "integer", "minimum": 1, "default": 100},
             "maxDuration": duration_schema("the longest the loop may take")},
            ("condition",), obj({"iterations": {"type": "integer"}, "conditionMet": {"type": "boolean"}},
                                ["iterations", "conditionMet"])),
    control("flow.subflow", "Subflow", "Execute another flow by namespace and name with `inputs`; when waited "
            "for (the default), its outputs are this task's.",
            {"namespace": text("the flow's namespace", minLength=1), "name": text("the flow's name", minLength=1),
             "inputs": {"type": "object", "default": {}, "description": "the flow's inputs"},
             "wait": {"type": "boolean", "default": True, "description": "wait for it to end"}},
            ("namespace", "name"),
            obj({"executionId": {"type": "string"}, "status": {"type": "string"},
                 "outputs": {"type": ["object", "null"], "description": "the subflow's outputs, when waited for"}},
                ("executionId", "status", "outputs"))),
    control("flow.sleep", "Sleep", "Wait durably: the execution holds no thread or process while it sleeps, "
            "and survives a restart.",
            {"duration": duration_schema("how long to wait")}, ("duration",),
            obj({"sleptUntil": {"type": "integer", "description": "epoch ms"}}, ["sleptUntil"])),
    control("flow.approval", "Approval", "Wait (WAITING) until someone with `role` approves or rejects, filling "
            "in `form`; after `timeout`, the `default` outcome (none: the task times out). The decision's values "
            "are the task's outputs.",
            {"message": text("what the approver is asked"),
             "form": {"type": "array", "items": _FORM_FIELD, "description": "fields the approver fills in"},
             "role": {**_ROLE, "description": "the role needed to decide"},
             "timeout": duration_schema("how long to wait for a decision"),
             "default": {"enum": ["approve", "reject"], "description": "the outcome when the timeout passes"}},
            ("message",),
            obj({"approved": {"type": "boolean"}, "decidedBy": {"type": ["string", "null"]},
                 "values": {"type": "object", "description": "the form's values"},
                 "timedOut": {"type": "boolean", "description": "true when approved by default at the timeout"}},
                ["approved", "decidedBy", "values"])),
    control("flow.fail", "Fail", "Fail the execution with `message` (its `errors` tasks then run).",
            {"message": text("why")}, ("message",)),
]
