"""`/api/v1/audit`: who changed what, when, and how it went."""

from __future__ import annotations

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from app.api.bounds import EPOCH_MS_MAX, INT32_MAX
from app.api.context import context


class AuditEntryOut(msgspec.Struct, rename="camel"):
    id: int
    at: int
    workspace: str | None
    actor: str | None
    action: str
    target: str
    outcome: str
    status: int
    request_id: str


class AuditPage(msgspec.Struct, rename="camel"):
    items: list[AuditEntryOut]
    next_cursor: int | None


@get("/audit", opt={"role": "admin"})
async def list_audit(
    request: Request,
    username: str | None = Parameter(query="actor", default=None),
    action: str | None = None,
    outcome: str | None = None,
    since: int | None = Parameter(default=None, ge=0, le=EPOCH_MS_MAX, description="epoch ms, inclusive"),
    until: int | None = Parameter(default=None, ge=0, le=EPOCH_MS_MAX, description="epoch ms, exclusive"),
    cursor: int | None = Parameter(default=None, ge=0, le=INT32_MAX),
    limit: int = Parameter(default=50, ge=1, le=200),
) -> AuditPage:
    """Recent audit entries of the workspace, newest first (workspace admins)."""
    services, actor = context(request)
    items, next_cursor = await services.audit.list(
        actor.workspace, actor=username, action=action, outcome=outcome,
        since_ms=since, until_ms=until, cursor=cursor, limit=limit,
    )
    return AuditPage([AuditEntryOut(**i) for i in items], next_cursor)


HANDLERS = [list_audit]
