"""Workspaces and their members, and the caller's API tokens."""

from __future__ import annotations

import msgspec
from litestar import Request, delete, get, post, put

from app.api.bounds import EpochMs
from app.api.context import context


class WorkspaceIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str


class WorkspaceOut(msgspec.Struct, rename="camel"):
    id: str
    name: str
    created_at: int
    role: str


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str


class MemberOut(msgspec.Struct, rename="camel"):
    workspace: str
    username: str
    role: str


class TokenIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    label: str = ""
    expires_at: EpochMs | None = None


class TokenOut(msgspec.Struct, rename="camel"):
    id: str
    label: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None = None
    token: str | None = None  # only in the answer to its creation


@get("/workspaces", opt={"role": "optional"})
async def list_workspaces(request: Request) -> list[WorkspaceOut]:
    """The workspaces the caller belongs to (every one, for the instance admin)."""
    services, actor = context(request)
    if actor.username is None:
        return []
    return [WorkspaceOut(**w) for w in await services.accounts.list_workspaces(actor)]


@post("/workspaces", opt={"role": "viewer", "audit": "workspace.create"}, status_code=201)
async def create_workspace(request: Request, data: WorkspaceIn) -> WorkspaceOut:
    """Create a workspace (instance admin); the creator becomes its admin."""
    services, actor = context(request)
    return WorkspaceOut(**await services.accounts.create_workspace(actor, data.id, data.name))


@put("/workspaces/{workspace_id:str}/members/{username:str}", opt={"role": "optional", "audit": "member.set"})
async def set_member(request: Request, workspace_id: str, username: str, data: MemberIn) -> MemberOut:
    """Give a user a role in a workspace (admins of that workspace)."""
    services, actor = context(request)
    return MemberOut(**await services.accounts.set_member(actor, workspace_id, username, data.role))


@delete("/workspaces/{workspace_id:str}/members/{username:str}", opt={"role": "optional", "audit": "member.remove"})
async def remove_member(request: Request, workspace_id: str, username: str) -> None:
    """Take a user out of a workspace (admins of that workspace)."""
    services, actor = context(request)
    await services.accounts.remove_member(actor, workspace_id, username)


@get("/tokens", opt={"role": "viewer"})
async def list_tokens(request: Request) -> list[TokenOut]:
    """The caller's API tokens, without their secrets."""
    services, actor = context(request)
    return [TokenOut(**t) for t in await services.accounts.list_tokens(actor)]


@post("/tokens", opt={"role": "viewer", "audit": "token.create"}, status_code=201)
async def create_token(request: Request, data: TokenIn) -> TokenOut:
    """A new API token; the `token` field is shown this once."""
    services, actor = context(request)
    return TokenOut(**await services.accounts.create_token(actor, data.label, data.expires_at))


@delete("/tokens/{token_id:str}", opt={"role": "viewer", "audit": "token.revoke"})
async def revoke_token(request: Request, token_id: str) -> None:
    """Revoke an API token at once."""
    services, actor = context(request)
    await services.accounts.revoke_token(actor, token_id)


# Workspaces are instance-wide: served under /api/v1 only. Tokens belong to the user.
HANDLERS = [list_workspaces, create_workspace, set_member, remove_member, list_tokens, create_token, revoke_token]
