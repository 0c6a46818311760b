"""The one authorization check every route passes (called by the request middleware).

A handler states the least role it needs in `opt["role"]` (absent: public). The check reads
the bearer token, resolves the caller's role in the addressed workspace (`/api/v1/...` is
workspace `main`, `/api/v1/w/{workspace}/...` another), and refuses with 401 or 403. The
caller, as an `Actor`, is kept in the request's state and handed to the handler.

It runs as plain code in the middleware rather than as a Litestar guard: a guard costs a
copy of the handler on every request, a third of the throughput of a small handler.
"""

from __future__ import annotations

from typing import Any

from litestar.handlers.base import BaseRouteHandler

from app.api.context import bearer_token
from app.errors import Forbidden, NotFound, Unauthorized
from app.services.accounts import DEFAULT_WORKSPACE
from app.services.actor import OPTIONAL, Actor, at_least


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def authorize(scope: dict[str, Any], handler: BaseRouteHandler, request_id: str) -> Actor:
    """The caller of this request; raises Unauthorized / Forbidden / NotFound."""
    needed = handler.opt.get("role")
    workspace = scope["path_params"].get("workspace", DEFAULT_WORKSPACE)
    action = handler.opt.get("audit") or ""
    status = getattr(handler, "status_code", None) or 200  # what it answers when it succeeds
    # A change's audit entries, tracked so that one whose service writes none is audited by
    # the server (app.server.audit); a run's success is recorded by the run itself.
    audited: list[str] | None = (
        [] if action and scope["method"] in MUTATING and handler.opt.get("audit_success", True) else None
    )
    if needed is None:
        return Actor(None, workspace, None, request_id=request_id, action=action, status=status,
                     audited=audited)
    services = scope["litestar_app"].state.services
    run_id = run_token_exp = run_cap = None
    if not services.settings.auth:
        username, superadmin, role = "local", True, "admin"
    else:
        token = bearer_token(scope["headers"])
        if token is None:
            if needed == OPTIONAL:
                return Actor(None, workspace, None, request_id=request_id, action=action, status=status,
                             audited=audited)
            raise Unauthorized("this needs a token: Authorization: Bearer <token>")
        username, superadmin, role, run_id, run_token_exp, run_cap = await services.accounts.authenticate(token, workspace)
        if superadmin:
            role = "admin"
    actor = Actor(username, workspace, role, superadmin, request_id, action, run_id, run_token_exp, run_cap, status,
                  audited)
    scope["state"]["actor"] = actor  # known even when refused below, for the audit entry
    if superadmin and workspace != DEFAULT_WORKSPACE and not await services.accounts.workspace_exists(workspace):
        raise NotFound(f"no workspace {workspace}")
    if needed == OPTIONAL:
        return actor
    if role is None:
        raise Forbidden(f"{username} has no access to workspace {workspace}")
    if not at_least(role, needed):
        raise Forbidden(f"this needs the {needed} role in {workspace}; {username} is {role}")
    return actor
