"""`/api/v1/variables`, `/api/v1/resources`, `/api/v1/resource_types`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put

from app.api.context import context, json_string


class VariableIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    path: str
    value: str
    is_secret: bool = False
    description: str = ""


class VariableUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    value: str | None = None
    is_secret: bool | None = None
    description: str | None = None


class VariableOut(msgspec.Struct, rename="camel"):
    path: str
    is_secret: bool
    value: str | None  # None for a secret: read it at /variables/value/{path}
    description: str
    updated_by: str
    created_at: int
    updated_at: int


class ResourceIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    path: str
    resource_type: str
    value: Any
    description: str = ""


class ResourceUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    value: Any = None
    description: str | None = None


class ResourceOut(msgspec.Struct, rename="camel"):
    path: str
    resource_type: str
    value: Any
    description: str
    updated_by: str
    created_at: int
    updated_at: int


class ResourceTypeIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    name: str
    schema: dict[str, Any]
    description: str = ""


class ResourceTypeOut(msgspec.Struct, rename="camel"):
    name: str
    schema: dict[str, Any]
    description: str
    built_in: bool


@get("/variables", opt={"role": "viewer"})
async def list_variables(request: Request, prefix: str = "") -> list[VariableOut]:
    services, actor = context(request)
    return [VariableOut(**v) for v in await services.variables.list(actor.workspace, prefix)]


@post("/variables", opt={"role": "editor", "audit": "variable.create"}, status_code=201)
async def create_variable(request: Request, data: VariableIn) -> VariableOut:
    """A plain variable, or a secret one (encrypted at rest, never listed in clear)."""
    services, actor = context(request)
    return VariableOut(**await services.variables.create(actor, data.path, data.value, data.is_secret, data.description))


@get("/variables/p/{path:path}", opt={"role": "viewer"})
async def get_variable(request: Request, path: str) -> VariableOut:
    services, actor = context(request)
    return VariableOut(**await services.variables.get(actor.workspace, path.lstrip("/")))


@get("/variables/value/{path:path}", opt={"role": "viewer"})
async def get_variable_value(request: Request, path: str) -> Response[bytes]:
    """The clear value, as a JSON string (a secret's needs the executor role)."""
    services, actor = context(request)
    return json_string(await services.variables.value(actor, path.lstrip("/")))


@put("/variables/p/{path:path}", opt={"role": "editor", "audit": "variable.update"})
async def update_variable(request: Request, path: str, data: VariableUpdate) -> VariableOut:
    services, actor = context(request)
    return VariableOut(**await services.variables.update(actor, path.lstrip("/"), data.value, data.is_secret, data.description))


@delete("/variables/p/{path:path}", opt={"role": "editor", "audit": "variable.delete"})
async def delete_variable(request: Request, path: str) -> None:
    services, actor = context(request)
    await services.variables.delete(actor, path.lstrip("/"))


@get("/resources", opt={"role": "viewer"})
async def list_resources(request: Request, resource_type: str | None = None, prefix: str = "") -> list[ResourceOut]:
    services, actor = context(request)
    return [ResourceOut(**r) for r in await services.resources.list(actor.workspace, resource_type, prefix)]


@post("/resources", opt={"role": "editor", "audit": "resource.create"}, status_code=201)
async def create_resource(request: Request, data: ResourceIn) -> ResourceOut:
    services, actor = context(request)
    return ResourceOut(**await services.resources.create(actor, data.path, data.resource_type, data.value, data.description))


@get("/resources/p/{path:path}", opt={"role": "viewer"})
async def get_resource(request: Request, path: str) -> ResourceOut:
    services, actor = context(request)
    return ResourceOut(**await services.resources.get(actor.workspace, path.lstrip("/")))


@get("/resources/value/{path:path}", opt={"role": "viewer"})
async def get_resource_value(request: Request, path: str, interpolate: bool = True) -> Any:
    """The value, with `$var:` and `$res:` references resolved unless `interpolate=false`."""
    services, actor = context(request)
    return await services.resources.value(actor, path.lstrip("/"), interpolate)


@put("/resources/p/{path:path}", opt={"role": "editor", "audit": "resource.update"})
async def update_resource(request: Request, path: str, data: ResourceUpdate) -> ResourceOut:
    services, actor = context(request)
    return ResourceOut(**await services.resources.update(actor, path.lstrip("/"), data.value, data.description))


@delete("/resources/p/{path:path}", opt={"role": "editor", "audit": "resource.delete"})
async def delete_resource(request: Request, path: str) -> None:
    services, actor = context(request)
    await services.resources.delete(actor, path.lstrip("/"))


@get("/resource_types", opt={"role": "viewer"})
async def list_resource_types(request: Request) -> list[ResourceTypeOut]:
    """Built-in types and the workspace's own."""
    services, actor = context(request)
    return [ResourceTypeOut(**t) for t in await services.resources.types(actor.workspace)]


@post("/resource_types", opt={"role": "admin", "audit": "resource_type.create"}, status_code=201)
async def create_resource_type(request: Request, data: ResourceTypeIn) -> ResourceTypeOut:
    services, actor = context(request)
    return ResourceTypeOut(**await services.resources.create_type(actor, data.name, data.schema, data.description))


@delete("/resource_types/{name:str}", opt={"role": "admin", "audit": "resource_type.delete"})
async def delete_resource_type(request: Request, name: str) -> None:
    services, actor = context(request)
    await services.resources.delete_type(actor, name)


HANDLERS = [
    list_variables, create_variable, get_variable, get_variable_value, update_variable, delete_variable,
    list_resources, create_resource, get_resource, get_resource_value, update_resource, delete_resource,
    list_resource_types, create_resource_type, delete_resource_type,
]
