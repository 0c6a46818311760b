"""`/api/v1/triggers`: webhooks and schedules, and a preview of a schedule's next fire times.
A webhook's key is a secret (whoever has it may fire it): shown to editors and above only."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post, put
from litestar.params import Parameter

from app.api.bounds import Count
from app.api.context import context
from app.services.actor import Actor, at_least, now_ms
from app.services.triggers import TriggerSpec, fire_times


def _reveal(actor: Actor) -> bool:
    return at_least(actor.role, "editor")


class RunnableOut(msgspec.Struct):
    kind: str
    path: str


class TriggerOut(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A trigger as the API shows it (`trigger_view`): the fields of its kind, its secret never,
    a webhook's key and url to editors and above only."""

    id: str
    workspace: str
    kind: str  # webhook or schedule
    runnable: RunnableOut
    args: dict[str, Any]
    enabled: bool
    summary: str
    description: str
    created_by: str
    created_at: int
    updated_by: str
    updated_at: int
    run_as: str
    has_secret: bool | msgspec.UnsetType = msgspec.UNSET  # webhook
    key: str | msgspec.UnsetType = msgspec.UNSET  # webhook, to editors
    url: str | msgspec.UnsetType = msgspec.UNSET  # webhook, to editors
    cron: str | msgspec.UnsetType = msgspec.UNSET  # schedule
    timezone: str | msgspec.UnsetType = msgspec.UNSET  # schedule
    catch_up: str | msgspec.UnsetType = msgspec.UNSET  # schedule: all, last or none
    next_fire_at: int | None | msgspec.UnsetType = msgspec.UNSET  # schedule, epoch ms
    last_fire_at: int | None | msgspec.UnsetType = msgspec.UNSET  # schedule, epoch ms


class FireTimes(msgspec.Struct, rename="camel"):
    fire_times: list[int]  # epoch ms


def trigger_out(view: dict[str, Any]) -> TriggerOut:
    return msgspec.convert(view, TriggerOut)


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True):
    cron: str
    timezone: str = "UTC"
    count: Count = 5


@get("/triggers", opt={"role": "viewer"})
async def list_triggers(request: Request, kind: str | None = None) -> list[TriggerOut]:
    services, actor = context(request)
    return [trigger_out(view) for view in await services.triggers.list(actor.workspace, kind, reveal=_reveal(actor))]


@post("/triggers", opt={"role": "editor", "audit": "trigger.create"}, status_code=201)
async def create_trigger(request: Request, data: TriggerSpec) -> TriggerOut:
    """A webhook ({kind: webhook, runnable, key?, secret?}) or a schedule ({kind: schedule,
    runnable, cron, timezone?, args?, catchUp?})."""
    services, actor = context(request)
    return trigger_out(await services.triggers.create(actor, data))


@post("/triggers/preview", opt={"role": "viewer", "audit": False}, status_code=200)
async def preview(request: Request, data: PreviewIn) -> FireTimes:
    """The next fire times (epoch ms) of a cron expression in a time zone."""
    return FireTimes(fire_times(data.cron, data.timezone, now_ms(), data.count))


@get("/triggers/{trigger_id:str}", opt={"role": "viewer"})
async def get_trigger(request: Request, trigger_id: str) -> TriggerOut:
    services, actor = context(request)
    return trigger_out(await services.triggers.get(actor.workspace, trigger_id, reveal=_reveal(actor)))


@get("/triggers/{trigger_id:str}/preview", opt={"role": "viewer"})
async def preview_trigger(
    request: Request, trigger_id: str, count: int = Parameter(default=5, ge=1, le=100)
) -> FireTimes:
    """The next fire times of a schedule."""
    services, actor = context(request)
    trigger = await services.triggers.get(actor.workspace, trigger_id)
    if trigger["kind"] != "schedule":
        return FireTimes([])
    return FireTimes(fire_times(trigger["cron"], trigger["timezone"], now_ms(), count))


@put("/triggers/{trigger_id:str}", opt={"role": "editor", "audit": "trigger.update"})
async def update_trigger(request: Request, trigger_id: str, data: TriggerSpec) -> TriggerOut:
    """Change a trigger (enable or disable it with `enabled`); a webhook's secret left out is kept."""
    services, actor = context(request)
    return trigger_out(await services.triggers.update(actor, trigger_id, data))


@delete("/triggers/{trigger_id:str}", opt={"role": "editor", "audit": "trigger.delete"}, status_code=204)
async def delete_trigger(request: Request, trigger_id: str) -> None:
    services, actor = context(request)
    await services.triggers.delete(actor, trigger_id)


HANDLERS = [list_triggers, create_trigger, preview, get_trigger, preview_trigger, update_trigger, delete_trigger]
