"""`/api/workflows`: registered workflows, their instances (create, batch, list, details,
history), pause, resume, restart, terminate, events, and the runner tick.

Every route passes the API's one role check (`viewer`: the handler's `opt`); creating,
managing, sending events and ticking pass the service's policy hooks as well
(`app/services/instances.py`: executor creates and sends events, editor manages, admin ticks).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import Parameter

from app.api.bounds import INT32_MAX
from app.api.context import context
from app.services.instances import Instance

_JSON = dict[str, Any]


class WorkflowOut(msgspec.Struct, rename="camel"):
    name: str
    path: str  # the script whose main is the workflow


class WorkflowList(msgspec.Struct):
    workflows: list[WorkflowOut]


class CurrentStep(msgspec.Struct, rename="camel"):
    name: str
    attempts: int
    next_retry_at: int | None


class InstanceOut(msgspec.Struct, rename="camel"):
    id: str
    name: str
    status: str  # queued running paused errored terminated complete waiting waitingForPause unknown
    run_number: int
    params: _JSON
    output: Any
    error: _JSON | None
    created_by: str
    created_at: int
    started_at: int | None
    ended_at: int | None
    wake_at: int | None
    awaiting_event: str | None
    awaiting_approval: str | None
    current_step: CurrentStep | None


class InstancePage(msgspec.Struct, rename="camel"):
    instances: list[InstanceOut]
    next_cursor: str | None  # opaque: give it back as `cursor`


class CreateIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str | None = None
    params: _JSON = {}


class BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    params: _JSON = {}


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[BatchItem]


class BatchOut(msgspec.Struct):
    instances: list[InstanceOut]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    payload: Any = None


class EventOut(msgspec.Struct):
    type: str
    number: int  # its number among the events of its type sent to the instance


class TickIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    max_instances: int = 10
    max_steps: int = 1000


class TickOut(msgspec.Struct):
    processed: int


class HistoryStep(msgspec.Struct):
    seq: int
    name: str
    status: str
    output: Any
    error: Any
    at: int


class HistoryEvent(msgspec.Struct, rename="camel"):
    seq: int
    type: str
    payload: Any
    sent_by: str | None
    at: int


class HistoryLog(msgspec.Struct):
    seq: int
    ts: int
    level: str  # info, error
    category: str  # user, system
    message: str


class History(msgspec.Struct, rename="camel"):
    instance_id: str
    run_number: int
    runs: int
    steps: list[HistoryStep]
    steps_cursor: int | None
    events: list[HistoryEvent]
    events_cursor: int | None
    logs: list[HistoryLog] | msgspec.UnsetType = msgspec.UNSET
    logs_cursor: int | None | msgspec.UnsetType = msgspec.UNSET


def instance_out(instance: Instance) -> InstanceOut:
    fields = dataclasses.asdict(instance)
    step = fields.pop("current_step")
    return InstanceOut(**fields, current_step=None if step is None else CurrentStep(step["name"], step["attempts"],
                                                                                      step["nextRetryAt"]))


@get("/workflows", opt={"role": "viewer"})
async def list_workflows(request: Request) -> WorkflowList:
    """The workflows of the workspace: scripts whose `main` is a workflow, by name."""
    services, actor = context(request)
    return WorkflowList([WorkflowOut(name, path) for name, path in await services.instances.workflows(actor.workspace)])


@get("/workflows/{name:str}/instances", opt={"role": "viewer"})
async def list_instances(
    request: Request, name: str, status: str | None = None,
    page_size: int = Parameter(query="pageSize", default=25, ge=1, le=100), cursor: str | None = None,
) -> InstancePage:
    """Instances newest first, `pageSize` a page (25 by default, at most 100)."""
    services, actor = context(request)
    items, next_cursor = await services.instances.list(actor.workspace, name, status, page_size, cursor)
    return InstancePage([instance_out(i) for i in items], next_cursor)


@post("/workflows/{name:str}/instances", opt={"role": "viewer", "audit": "instance.create", "audit_success": False},
      status_code=201)
async def create_instance(request: Request, name: str, data: CreateIn) -> InstanceOut:
    """Start an instance with `params`, under `id` if given (at most 64 characters; 409 when taken)."""
    services, actor = context(request)
    return instance_out(await services.instances.create(actor, name, data.id, data.params))


@post("/workflows/{name:str}/instances/batch", opt={"role": "viewer", "audit": "instance.create",
                                                    "audit_success": False}, status_code=201)
async def create_batch(request: Request, name: str, data: BatchIn) -> BatchOut:
    """Start up to 100 instances at once, each with its id: all or none."""
    services, actor = context(request)
    items = [{"id": item.id, "params": item.params} for item in data.instances]
    return BatchOut([instance_out(i) for i in await services.instances.batch(actor, name, items)])


@get("/workflows/{name:str}/instances/{instance_id:str}", opt={"role": "viewer"})
async def get_instance(request: Request, name: str, instance_id: str) -> InstanceOut:
    """Its status, run number, params, output or error, the step it is at (with its attempts
    and next retry), when it wakes, and the event or approval it waits for."""
    services, actor = context(request)
    return instance_out(await services.instances.get(actor.workspace, name, instance_id))


@get("/workflows/{name:str}/instances/{instance_id:str}/history", opt={"role": "viewer"})
async def instance_history(
    request: Request, name: str, instance_id: str,
    run_number: int | None = Parameter(query="runNumber", default=None, ge=1, le=INT32_MAX),
    page_size: int = Parameter(query="pageSize", default=25, ge=1, le=100),
    steps_cursor: int = Parameter(query="stepsCursor", default=0, ge=0, le=2**53),
    events_cursor: int = Parameter(query="eventsCursor", default=0, ge=0, le=2**53),
    logs_cursor: int = Parameter(query="logsCursor", default=0, ge=0, le=2**53),
    include_logs: bool = Parameter(query="includeLogs", default=False),
    log_level: str | None = Parameter(query="logLevel", default=None, description="info or error"),
    log_category: str | None = Parameter(query="logCategory", default=None, description="user or system"),
    order: str = Parameter(default="asc", description="asc or desc"),
) -> History:
    """Steps, events and (with `includeLogs`) logs of one run of the instance (the latest by
    default), each a page with its own cursor."""
    services, actor = context(request)
    found = await services.instances.history(actor.workspace, name, instance_id, run_number, page_size, steps_cursor,
                                             events_cursor, logs_cursor, include_logs, log_level, log_category, order)
    return msgspec.convert(found, History)


def _action(verb: str):  # type: ignore[no-untyped-def]
    @post(f"/workflows/{{name:str}}/instances/{{instance_id:str}}/{verb}",
          opt={"role": "viewer", "audit": f"instance.{verb}", "errors": (409,)}, status_code=200)
    async def act(request: Request, name: str, instance_id: str) -> InstanceOut:
        services, actor = context(request)
        return instance_out(await getattr(services.instances, verb)(actor, name, instance_id))
    act.__doc__ = {
        "pause": "Pause: at once when queued or waiting, at its next step when running (waitingForPause until then).",
        "resume": "Resume a paused instance, or take back a pause it has not reached yet.",
        "restart": "Run it again from the start under the same id, with the next runNumber (not while queued or running).",
        "terminate": "Stop it for good (terminated).",
    }[verb]
    return act


@post("/workflows/{name:str}/instances/{instance_id:str}/events",
      opt={"role": "viewer", "audit": "instance.event", "errors": (409,)}, status_code=202)
async def send_event(request: Request, name: str, instance_id: str, data: EventIn) -> EventOut:
    """Send it an event: kept while it is queued, running, paused or waiting for something else,
    delivered when it waits for that type."""
    services, actor = context(request)
    return EventOut(data.type, await services.instances.send_event(actor, name, instance_id, data.type, data.payload))


@post("/_runner/tick", opt={"role": "viewer", "audit": "workflow.tick"}, status_code=200)
async def tick(request: Request, data: TickIn) -> TickOut:
    """Hand the runner the instances that are due now (admin; off unless enabled in settings:
    403 RUNNER_TICK_DISABLED)."""
    services, actor = context(request)
    return TickOut(await services.instances.tick(actor, data.max_instances, data.max_steps))


HANDLERS = [list_workflows, list_instances, create_instance, create_batch, get_instance, instance_history,
            *(_action(verb) for verb in ("pause", "resume", "restart", "terminate")), send_event]
TICK_HANDLERS = [tick]
