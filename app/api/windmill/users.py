"""Windmill's user, token and version routes: what `wmill.whoami`, `create_token` and
`get_version` call (`/api/users/whoami`, `/api/users/tokens/create`, `/api/version`), and the
workspace's own `users/whoami`.
"""

from __future__ import annotations

import datetime

import msgspec
from litestar import MediaType, Request, Response, get, post

import app as flowmill
from app.api.context import context
from app.errors import BadRequest, Unauthorized
from app.services.actor import OPTIONAL
from app.services.actor import Actor


class WindmillUser(msgspec.Struct):
    """Windmill's user object: the workspace fields and the instance-wide ones together."""

    username: str
    email: str
    name: str
    workspace_id: str
    role: str | None
    is_admin: bool
    is_super_admin: bool
    super_admin: bool
    operator: bool
    operator_only: bool
    disabled: bool
    verified: bool
    login_type: str
    groups: list[str]
    folders: list[str]
    folders_owners: list[str]


class TokenIn(msgspec.Struct):
    label: str | None = None
    expiration: str | None = None  # ISO-8601; none: the token does not expire


def windmill_user(actor: Actor) -> WindmillUser:
    if actor.username is None:
        raise Unauthorized("whoami needs a token: Authorization: Bearer <token>")
    operator = actor.role in ("viewer", "executor")
    return WindmillUser(
        username=actor.username, email=f"{actor.username}@flowmill.local", name=actor.username,
        workspace_id=actor.workspace, role=actor.role, is_admin=actor.role == "admin",
        is_super_admin=actor.superadmin, super_admin=actor.superadmin, operator=operator, operator_only=operator,
        disabled=False, verified=True, login_type="password", groups=[], folders=[], folders_owners=[],
    )


def _expires_at_ms(expiration: str | None) -> int | None:
    if not expiration:
        return None
    try:
        when = datetime.datetime.fromisoformat(expiration)
    except ValueError:
        raise BadRequest("expiration is an ISO-8601 date and time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


@get("/users/whoami", opt={"role": "viewer"})
async def whoami_in_workspace(request: Request) -> WindmillUser:
    """The caller, with their role in the workspace."""
    _, actor = context(request)
    return windmill_user(actor)


@get("/api/users/whoami", opt={"role": OPTIONAL})
async def whoami(request: Request) -> WindmillUser:
    """The caller (their role is the one in workspace `main`, if any); 401 without a token."""
    _, actor = context(request)
    return windmill_user(actor)


@post("/api/users/tokens/create", opt={"role": OPTIONAL, "audit": "token.create"}, status_code=201)
async def create_token(request: Request, data: TokenIn) -> Response[str]:
    """A new API token for the caller, as text (shown this once)."""
    services, actor = context(request)
    if actor.username is None:
        raise Unauthorized("creating a token needs a token: Authorization: Bearer <token>")
    created = await services.accounts.create_token(actor, data.label or "wmill", _expires_at_ms(data.expiration))
    return Response(created["token"], media_type=MediaType.TEXT, status_code=201)


@get("/api/version")
async def version() -> Response[str]:
    """The server's name and version, as text (Windmill answers e.g. `CE v1.400.0`)."""
    return Response(f"Flowmill v{flowmill.__version__}", media_type=MediaType.TEXT)


WORKSPACE_HANDLERS = [whoami_in_workspace]
HANDLERS = [whoami, create_token, version]
