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


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True):
    cron: str
    timezone: str = "UTC"
    count: Count = 5


@get("/triggers", opt={"role": "viewer"})
async def list_triggers(request: Request, kind: str | None = None) -> list[dict[str, Any]]:
    services, actor = context(request)
    return await services.triggers.list(actor.workspace, kind, reveal=_reveal(actor))


@post("/triggers", opt={"role": "editor", "audit": "trigger.create"}, status_code=201)
async def create_trigger(request: Request, data: TriggerSpec) -> dict[str, Any]:
    """A webhook ({kind: webhook, runnable, key?, secret?}) or a schedule ({kind: schedule,
    runnable, cron, timezone?, args?, catchUp?})."""
    services, actor = context(request)
    return await services.triggers.create(actor, data)


@post("/triggers/preview", opt={"role": "viewer"}, status_code=200)
async def preview(request: Request, data: PreviewIn) -> dict[str, Any]:
    """The next fire times (epoch ms) of a cron expression in a time zone."""
    return {"fireTimes": fire_times(data.cron, data.timezone, now_ms(), data.count)}


@get("/triggers/{trigger_id:str}", opt={"role": "viewer"})
async def get_trigger(request: Request, trigger_id: str) -> dict[str, Any]:
    services, actor = context(request)
    return await services.triggers.get(actor.workspace, trigger_id, reveal=_reveal(actor))


@get("/triggers/{trigger_id:str}/preview", opt={"role": "viewer"})
async def preview_trigger(
    request: Request, trigger_id: str, count: int = Parameter(default=5, ge=1, le=100)
) -> dict[str, Any]:
    """The next fire times of a schedule."""
    services, actor = context(request)
    trigger = await services.triggers.get(actor.workspace, trigger_id)
    if trigger["kind"] != "schedule":
        return {"fireTimes": []}
    return {"fireTimes": fire_times(trigger["cron"], trigger["timezone"], now_ms(), count)}


@put("/triggers/{trigger_id:str}", opt={"role": "editor", "audit": "trigger.update"})
async def update_trigger(request: Request, trigger_id: str, data: TriggerSpec) -> dict[str, Any]:
    """Change a trigger (enable or disable it with `enabled`); a webhook's secret left out is kept."""
    services, actor = context(request)
    return await services.triggers.update(actor, trigger_id, data)


@delete("/triggers/{trigger_id:str}", opt={"role": "editor", "audit": "trigger.delete"}, status_code=204)
async def delete_trigger(request: Request, trigger_id: str) -> None:
    services, actor = context(request)
    await services.triggers.delete(actor, trigger_id)


HANDLERS = [list_triggers, create_trigger, preview, get_trigger, preview_trigger, update_trigger, delete_trigger]
