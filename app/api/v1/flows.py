"""`/api/v1/flows`: YAML flows, their validation, revisions, export and import (DESIGN §4.1).

Viewers read and validate; editors create, change, delete, import and restore. A flow's name
and namespace come from its YAML: a body may repeat them, and then they must match.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, delete, get, post, put
from litestar.params import Parameter

from app.api.bounds import INT32_MAX
from app.api.context import context
from app.flows.model import FlowError
from app.services.flows import FlowRecord, Revision


class FlowIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A flow to save: its YAML (name and namespace, when given, must be the YAML's)."""

    yaml_content: str
    name: str | None = None
    namespace: str | None = None


class FlowOut(msgspec.Struct, rename="camel"):
    """A flow at its latest revision."""

    id: str
    workspace: str
    name: str
    namespace: str
    description: str
    labels: dict[str, str]
    yaml_content: str
    revision: int
    path: str  # f/<namespace>/<name>: how routes, schedules and run_flow name it
    created_by: str
    created_at: int  # epoch ms
    updated_by: str
    updated_at: int  # epoch ms


class FlowPage(msgspec.Struct, rename="camel"):
    items: list[FlowOut]
    next_cursor: str | None  # give it back as `cursor` for the next page; null on the last one


class RevisionOut(msgspec.Struct, rename="camel"):
    """One save of a flow's YAML; `hash` is what runs of it record."""

    revision: int
    yaml_content: str
    created_by: str
    created_at: int  # epoch ms
    hash: str = ""


class FlowExport(msgspec.Struct, rename="camel"):
    """A flow as exported, and what an import takes: the YAML is what is imported (name and
    namespace, when given, must be its own); the revisions are a record of its history."""

    yaml_content: str
    name: str | None = None
    namespace: str | None = None
    description: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    revision: int | None = None
    revisions: list[RevisionOut] = msgspec.field(default_factory=list)


class ValidateIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    yaml_content: str


class FlowErrorOut(msgspec.Struct):
    """Where a flow is wrong: `path` such as `tasks[2].properties.url` ("" for the document),
    with the line and column (1-based) when known."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None


class Validation(msgspec.Struct):
    valid: bool
    errors: list[FlowErrorOut]


def flow_out(record: FlowRecord) -> FlowOut:
    return FlowOut(
        id=record.id, workspace=record.workspace, name=record.name, namespace=record.namespace,
        description=record.description, labels=record.labels, yaml_content=record.yaml, revision=record.revision,
        path=record.path, created_by=record.created_by, created_at=record.created_at, updated_by=record.updated_by,
        updated_at=record.updated_at,
    )


def revision_out(revision: Revision) -> RevisionOut:
    return RevisionOut(revision.revision, revision.yaml, revision.created_by, revision.created_at, revision.hash)


def error_out(error: FlowError) -> FlowErrorOut:
    return FlowErrorOut(error.path, error.message, error.line, error.column)


RevisionNumber = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="a revision number (1, 2, ...)")]


@get("/flows", opt={"role": "viewer"})
async def list_flows(
    request: Request,
    namespace: str | None = Parameter(default=None, max_length=200),
    q: str | None = Parameter(default=None, max_length=200, description="the name contains this (any case)"),
    label: str | None = Parameter(default=None, max_length=1000, description="key=value: a label the flow has"),
    cursor: str | None = Parameter(default=None, max_length=500),
    limit: int = Parameter(default=50, ge=1, le=200),
) -> FlowPage:
    """The workspace's flows, by namespace then name."""
    services, actor = context(request)
    page = await services.flows.list(actor.workspace, namespace, q, label, cursor, limit)
    return FlowPage([flow_out(f) for f in page.items], page.next_cursor)


@post("/flows", opt={"role": "editor", "audit": "flow.create"}, status_code=201)
async def create_flow(request: Request, data: FlowIn) -> FlowOut:
    """A new flow from its YAML, at revision 1; 409 when its namespace and name are taken,
    422 with `details.errors` when the YAML is not a valid flow."""
    services, actor = context(request)
    return flow_out(await services.flows.create(actor, data.yaml_content, data.name, data.namespace))


@post("/flows/validate", opt={"role": "viewer", "audit": False}, status_code=200)
async def validate_flow(request: Request, data: ValidateIn) -> Validation:
    """Whether YAML is a valid flow, and every error found in it; saves nothing."""
    services, _ = context(request)
    errors = services.flows.validate(data.yaml_content)
    return Validation(not errors, [error_out(e) for e in errors])


@post("/flows/import", opt={"role": "editor", "audit": "flow.import"}, status_code=201)
async def import_flow(
    request: Request, data: FlowExport,
    overwrite: bool = Parameter(
        default=False, description="a flow of that namespace and name gets the YAML as its next revision"
    ),
) -> FlowOut:
    """A flow from an export (of this workspace or another); 409 when one of that namespace and
    name exists, unless `overwrite`. The import starts its own history: its revisions are not replayed."""
    services, actor = context(request)
    return flow_out(await services.flows.import_flow(actor, data.yaml_content, data.name, data.namespace, overwrite))


@get("/flows/{flow_id:str}", opt={"role": "viewer"})
async def get_flow(request: Request, flow_id: str) -> FlowOut:
    services, actor = context(request)
    return flow_out(await services.flows.get(actor.workspace, flow_id))


@put("/flows/{flow_id:str}", opt={"role": "editor", "audit": "flow.update"})
async def update_flow(request: Request, flow_id: str, data: FlowIn) -> FlowOut:
    """Save new YAML as the flow's next revision (the same YAML again changes nothing); 409 when
    it renames the flow to a namespace and name that are taken."""
    services, actor = context(request)
    return flow_out(await services.flows.update(actor, flow_id, data.yaml_content, data.name, data.namespace))


@delete("/flows/{flow_id:str}", opt={"role": "editor", "audit": "flow.delete"}, status_code=204)
async def delete_flow(request: Request, flow_id: str) -> None:
    """Delete a flow and its revisions; its runs keep their history."""
    services, actor = context(request)
    await services.flows.delete(actor, flow_id)


@get("/flows/{flow_id:str}/export", opt={"role": "viewer"})
async def export_flow(request: Request, flow_id: str) -> FlowExport:
    """The flow's YAML and its revisions (newest first), as `POST /flows/import` takes it."""
    services, actor = context(request)
    exported = await services.flows.export(actor.workspace, flow_id)
    flow = exported.flow
    return FlowExport(
        yaml_content=flow.yaml, name=flow.name, namespace=flow.namespace, description=flow.description,
        labels=flow.labels, revision=flow.revision, revisions=[revision_out(r) for r in exported.revisions],
    )


@get("/flows/{flow_id:str}/revisions", opt={"role": "viewer"})
async def list_revisions(request: Request, flow_id: str) -> list[RevisionOut]:
    """Every revision of the flow, newest first."""
    services, actor = context(request)
    return [revision_out(r) for r in await services.flows.revisions(actor.workspace, flow_id)]


@post("/flows/{flow_id:str}/revisions/{rev:int}/restore", opt={"role": "editor", "audit": "flow.restore"}, status_code=200)
async def restore_revision(request: Request, flow_id: str, rev: RevisionNumber) -> FlowOut:
    """Save an old revision's YAML again, as a new revision."""
    services, actor = context(request)
    return flow_out(await services.flows.restore(actor, flow_id, rev))


HANDLERS = [
    list_flows, create_flow, validate_flow, import_flow, get_flow, update_flow, delete_flow, export_flow,
    list_revisions, restore_revision,
]
