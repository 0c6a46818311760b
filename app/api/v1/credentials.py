"""`/api/v1/credentials`: secrets by name; values go in and never come out."""

from __future__ import annotations

import msgspec
from litestar import Request, delete, get, post, put

from app.api.context import context


class CredentialIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: str
    description: str = ""


class CredentialUpdate(msgspec.Struct, forbid_unknown_fields=True):
    value: str | None = None
    description: str | None = None


class CredentialOut(msgspec.Struct, rename="camel"):
    id: str
    name: str
    description: str
    created_by: str
    created_at: int
    updated_at: int


@get("/credentials", opt={"role": "viewer"})
async def list_credentials(request: Request) -> list[CredentialOut]:
    """Names and metadata of the workspace's credentials."""
    services, actor = context(request)
    return [CredentialOut(**c) for c in await services.credentials.list(actor.workspace)]


@post("/credentials", opt={"role": "editor", "audit": "credential.create"}, status_code=201)
async def create_credential(request: Request, data: CredentialIn) -> CredentialOut:
    """Store a secret, encrypted under the master key."""
    services, actor = context(request)
    return CredentialOut(**await services.credentials.create(actor, data.name, data.value, data.description))


class CredentialValue(msgspec.Struct):
    value: str


@get("/credentials/value/{name:str}", opt={"role": "executor"})
async def read_credential_value(request: Request, name: str) -> CredentialValue:
    """A credential's value, for a run's own code only (its `WM_TOKEN`): masked in that run's
    logs and result, and recorded in the audit log."""
    services, actor = context(request)
    return CredentialValue(await services.credentials.reveal_to_run(actor, name))


@get("/credentials/{credential_id:str}", opt={"role": "viewer"})
async def get_credential(request: Request, credential_id: str) -> CredentialOut:
    services, actor = context(request)
    return CredentialOut(**await services.credentials.get(actor.workspace, credential_id))


@put("/credentials/{credential_id:str}", opt={"role": "editor", "audit": "credential.update"})
async def update_credential(request: Request, credential_id: str, data: CredentialUpdate) -> CredentialOut:
    """Replace a credential's value and/or description."""
    services, actor = context(request)
    return CredentialOut(**await services.credentials.update(actor, credential_id, data.value, data.description))


@delete("/credentials/{credential_id:str}", opt={"role": "editor", "audit": "credential.delete"})
async def delete_credential(request: Request, credential_id: str) -> None:
    services, actor = context(request)
    await services.credentials.delete(actor, credential_id)


HANDLERS = [list_credentials, create_credential, read_credential_value, get_credential, update_credential, delete_credential]
