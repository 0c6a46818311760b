"""The Windmill-compatible surface, assembled: `/api/w/{workspace}/...` and the few routes
`wmill` calls without a workspace."""

from __future__ import annotations

from litestar import Router
from litestar.handlers import HTTPRouteHandler

from app.api.windmill import approvals, items, jobs, users, workflows

WORKSPACE_HANDLERS: list[HTTPRouteHandler] = [
    *jobs.HANDLERS, *items.HANDLERS, *approvals.HANDLERS, *users.WORKSPACE_HANDLERS, *workflows.HANDLERS,
]


def windmill_routers() -> list[Router]:
    """The routers to mount: one at `/api/w/{workspace}` and one at the root for
    `/api/version`, `/api/users/whoami` and `/api/users/tokens/create`."""
    return [
        Router("/api/w/{workspace:str}", route_handlers=WORKSPACE_HANDLERS),
        Router("/", route_handlers=users.HANDLERS),
    ]
