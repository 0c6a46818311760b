"""The one authorization check every route passes.

A handler states the least role it needs in `opt["role"]` (absent: public). The guard reads
the bearer token, resolves the caller's role in the addressed workspace (`/api/v1/...` is
workspace `main`, `/api/v1/w/{workspace}/...` another), and refuses with 401 or 403. The
caller, as an `Actor`, is then handed to the handler.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.errors import Forbidden, NotFound, Unauthorized
from app.services.accounts import DEFAULT_WORKSPACE
from app.services.actor import Actor, at_least

OPTIONAL = "optional"  # opt["role"] for routes that work signed in or not (registration)


def bearer_token(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authorize(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Resolve the caller and refuse it unless it holds the role the handler needs."""
    needed = handler.opt.get("role")
    workspace = connection.path_params.get("workspace", DEFAULT_WORKSPACE)
    request_id = connection.scope.get("state", {}).get("request_id", "")
    action = handler.opt.get("audit") or ""
    if needed is None:
        connection.state.actor = Actor(None, workspace, None, request_id=request_id, action=action)
        return
    services = connection.app.state.services
    if not services.settings.auth:
        connection.state.actor = Actor("local", workspace, "admin", True, request_id, action)
        username, superadmin, role = "local", True, "admin"
    else:
        token = bearer_token(connection)
        if token is None:
            if needed == OPTIONAL:
                connection.state.actor = Actor(None, workspace, None, request_id=request_id, action=action)
                return
            raise Unauthorized("this needs a token: Authorization: Bearer <token>")
        username, superadmin, role = await services.accounts.authenticate(token, workspace)
        if superadmin:
            role = "admin"
        connection.state.actor = Actor(username, workspace, role, superadmin, request_id, action)
    if superadmin and workspace != DEFAULT_WORKSPACE and not await services.accounts.workspace_exists(workspace):
        raise NotFound(f"no workspace {workspace}")
    if needed == OPTIONAL:
        return
    if role is None:
        raise Forbidden(f"{username} has no access to workspace {workspace}")
    if not at_least(role, needed):
        raise Forbidden(f"this needs the {needed} role in {workspace}; {username} is {role}")


def provide_actor(request: ASGIConnection) -> Actor:
    """The caller resolved by `authorize`, as a handler dependency."""
    return request.state.actor
