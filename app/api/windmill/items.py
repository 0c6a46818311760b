"""Windmill's variable, resource and flow-user-state routes: what `wmill.get_variable`,
`set_variable`, `get_resource`, `set_resource`, `list_resources`, `get_state` / `set_state`
(a resource of type `state` at WM_STATE_PATH) and `get/set_flow_user_state` call.

`set_variable` and `set_resource` look the item up first and create it on a 404, update it
otherwise, so the lookups answer 404 for an absent item. A run keeps its own state with
the run's role (executor): that role may write resources of type `state`, and only those.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.params import Parameter

from app.api.bounds import MAX_PAGE_NUMBER, check_depth
from app.api.context import context, json_string
from app.api.documented import ANY_JSON
from app.errors import Forbidden, NotFound
from app.services import Services
from app.services.actor import Actor, at_least
from app.services.flow_user_state import FlowUserState

STATE_TYPE = "state"


class WindmillVariable(msgspec.Struct):
    workspace_id: str
    path: str
    value: str | None  # None for a secret: read it at variables/get_value
    is_secret: bool
    description: str
    is_oauth: bool = False
    extra_perms: dict[str, bool] = {}


class WindmillVariableIn(msgspec.Struct):
    path: str
    value: str
    is_secret: bool = False
    description: str = ""


class WindmillVariableUpdate(msgspec.Struct):
    value: str | None = None
    is_secret: bool | None = None
    description: str | None = None


class WindmillResource(msgspec.Struct):
    workspace_id: str
    path: str
    value: Any
    resource_type: str
    description: str
    is_oauth: bool = False
    extra_perms: dict[str, bool] = {}


class WindmillResourceIn(msgspec.Struct):
    path: str
    resource_type: str
    value: Any = None
    description: str = ""


class WindmillResourceValue(msgspec.Struct):
    value: Any


def _path(path: str) -> str:
    return path.lstrip("/")


def _text(value: str, status: int = 200) -> Response[str]:
    return Response(value, media_type=MediaType.TEXT, status_code=status)


def windmill_resource(resource: dict[str, Any], workspace: str) -> WindmillResource:
    return WindmillResource(
        workspace_id=workspace, path=resource["path"], value=resource["value"],
        resource_type=resource["resource_type"], description=resource["description"],
    )


# -- variables ------------------------------------------------------------------------------------


@get("/variables/get_value/{path:path}", opt={"role": "viewer"})
async def variable_value(request: Request, path: str) -> Response[bytes]:
    """The clear value, as a JSON string (a secret's needs the executor role)."""
    services, actor = context(request)
    return json_string(await services.variables.value(actor, _path(path)))


@get("/variables/get/{path:path}", opt={"role": "viewer"})
async def variable(request: Request, path: str) -> WindmillVariable:
    """The variable (a secret's value left out); 404 when absent."""
    services, actor = context(request)
    found = await services.variables.get(actor.workspace, _path(path))
    return WindmillVariable(
        workspace_id=actor.workspace, path=found["path"], value=found["value"], is_secret=found["is_secret"],
        description=found["description"],
    )


@post("/variables/create", opt={"role": "editor", "audit": "variable.create"}, status_code=201)
async def create_variable(request: Request, data: WindmillVariableIn) -> Response[str]:
    """A new variable; its path, as text."""
    services, actor = context(request)
    created = await services.variables.create(actor, data.path, data.value, data.is_secret, data.description)
    return _text(created["path"], 201)


@post("/variables/update/{path:path}", opt={"role": "editor", "audit": "variable.update"}, status_code=200)
async def update_variable(request: Request, path: str, data: WindmillVariableUpdate) -> Response[str]:
    """Change a variable's value, secrecy or description; its path, as text."""
    services, actor = context(request)
    await services.variables.update(actor, _path(path), data.value, data.is_secret, data.description)
    return _text(_path(path))


# -- resources ------------------------------------------------------------------------------------


async def _may_write_resource(services: Services, actor: Actor, path: str, resource_type: str | None) -> None:
    """Editors write any resource; a lower role (a run's executor) only state, so it may
    neither make other resources nor turn an existing one into state."""
    if at_least(actor.role, "editor"):
        return
    refused = Forbidden(f"this needs the editor role in {actor.workspace} (a run may only write resources of type state)")
    if resource_type not in (None, STATE_TYPE):
        raise refused
    try:
        current = await services.resources.get(actor.workspace, path)
    except NotFound:
        return
    if current["resource_type"] != STATE_TYPE:
        raise refused


@get("/resources/get/{path:path}", opt={"role": "viewer"})
async def resource(request: Request, path: str) -> WindmillResource:
    """The resource (value not interpolated); 404 when absent."""
    services, actor = context(request)
    return windmill_resource(await services.resources.get(actor.workspace, _path(path)), actor.workspace)


@get("/resources/get_value/{path:path}", opt={"role": "viewer"})
async def resource_value(request: Request, path: str) -> Any:
    """The value as stored (`$var:` / `$res:` references left as they are)."""
    services, actor = context(request)
    return await services.resources.value(actor, _path(path), interpolate=False)


@get("/resources/get_value_interpolated/{path:path}", opt={"role": "viewer"})
async def resource_value_interpolated(request: Request, path: str) -> Any:
    """The value with `$var:` / `$res:` references resolved."""
    services, actor = context(request)
    return await services.resources.value(actor, _path(path), interpolate=True)


@get("/resources/exists/{path:path}", opt={"role": "viewer"})
async def resource_exists(request: Request, path: str) -> bool:
    """Whether a resource is at `path`."""
    services, actor = context(request)
    return await services.resources.exists(actor.workspace, _path(path))


@post("/resources/create", opt={"role": "executor", "audit": "resource.create"}, status_code=201)
async def create_resource(request: Request, data: WindmillResourceIn, update_if_exists: bool = False) -> Response[str]:
    """A new resource (replaced with `update_if_exists`); its path, as text."""
    services, actor = context(request)
    await _may_write_resource(services, actor, data.path, data.resource_type)
    created = await services.resources.create(
        actor, data.path, data.resource_type, data.value, data.description, upsert=update_if_exists
    )
    return _text(created["path"], 201)


@post("/resources/update_value/{path:path}", opt={"role": "executor", "audit": "resource.update"}, status_code=200)
async def update_resource_value(request: Request, path: str, data: WindmillResourceValue) -> Response[str]:
    """Replace a resource's value; its path, as text."""
    services, actor = context(request)
    path = _path(path)
    await _may_write_resource(services, actor, path, None)
    if data.value is None:
        # `update` reads None as "keep the value"; `set_state(None)` means null.
        current = await services.resources.get(actor.workspace, path)
        await services.resources.create(
            actor, path, current["resource_type"], None, current["description"], upsert=True
        )
    else:
        await services.resources.update(actor, path, data.value)
    return _text(path)


@get("/resources/list", opt={"role": "viewer"})
async def list_resources(
    request: Request,
    resource_type: str | None = None,
    page: int = Parameter(default=1, ge=1, le=MAX_PAGE_NUMBER),
    per_page: int = Parameter(default=100, ge=1, le=1000),
) -> list[WindmillResource]:
    """Resources of the workspace by path, of one type (or of any of a comma-separated list)."""
    services, actor = context(request)
    types = [t for t in (resource_type or "").split(",") if t]
    found = await services.resources.list(actor.workspace, types[0] if len(types) == 1 else None)
    if len(types) > 1:
        found = [r for r in found if r["resource_type"] in types]
    return [windmill_resource(r, actor.workspace) for r in found[(page - 1) * per_page:page * per_page]]


# -- flow user state ------------------------------------------------------------------------------


@post("/jobs/flow/user_states/{flow_id:str}/{key:str}", opt={"role": "executor", "audit": "flow_state.set", "body": ANY_JSON}, status_code=200)
async def set_flow_user_state(request: Request, flow_id: str, key: str) -> None:
    """Store the JSON body at `key` of the state of run `flow_id` (404 if there is no such run)."""
    services, actor = context(request)
    body = await request.body()
    check_depth(body)
    await FlowUserState(services.kv, services.jobs).set(actor, flow_id, key, body)


@get("/jobs/flow/user_states/{flow_id:str}/{key:str}", opt={"role": "viewer"})
async def get_flow_user_state(request: Request, flow_id: str, key: str) -> Any:
    """The JSON value at `key` of the state of run `flow_id`, null when unset."""
    services, actor = context(request)
    value = await FlowUserState(services.kv, services.jobs).get(actor, flow_id, key)
    return None if value is None else msgspec.Raw(value.encode())


HANDLERS = [
    variable_value, variable, create_variable, update_variable,
    resource, resource_value, resource_value_interpolated, resource_exists, create_resource, update_resource_value,
    list_resources, set_flow_user_state, get_flow_user_state,
]
