"""`/api/v1/routes`: HTTP routes, their OpenAPI import and export, static folders, and the
instance setting that serves routes under a workspace prefix."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import Parameter

from app.api.bounds import check_depth
from app.api.context import context
from app.api.documented import ARCHIVE, OPENAPI_IMPORT
from app.errors import BadRequest, Forbidden
from app.services import Services
from app.services.actor import at_least
from app.services.cors import Cors
from app.services.fetch import fetch_text
from app.services.instances import RUNNER_TICK
from app.services.openapi import curl_command, export_openapi, import_routes
from app.services.routes import RouteSpec

MAX_SPEC_BYTES = 5 * 1024 * 1024


class ImportIn(msgspec.Struct, forbid_unknown_fields=True):
    folder: str
    spec: str | None = None
    url: str | None = None


class ExportIn(msgspec.Struct, forbid_unknown_fields=True):
    title: str | None = None
    version: str | None = None
    description: str | None = None
    format: str = "yaml"
    filters: dict[str, Any] = msgspec.field(default_factory=dict)  # pathPrefix, kinds: [route, webhook], methods


class RunnableOut(msgspec.Struct):
    kind: str
    path: str


class RouteAuthOut(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A route's `auth` without its secrets (`key`, `password`, `secret` are never shown): the
    fields of its kind only."""

    kind: str  # none, api_key, basic, jwt, hmac, custom
    header: str | msgspec.UnsetType = msgspec.UNSET  # api_key, hmac
    username: str | msgspec.UnsetType = msgspec.UNSET  # basic
    preset: str | msgspec.UnsetType = msgspec.UNSET  # hmac: github, stripe, slack, generic
    algorithm: str | msgspec.UnsetType = msgspec.UNSET  # hmac generic
    encoding: str | msgspec.UnsetType = msgspec.UNSET  # hmac generic
    tolerance_s: int | msgspec.UnsetType = msgspec.UNSET  # hmac stripe, slack
    script: str | msgspec.UnsetType = msgspec.UNSET  # custom


class StaticOut(msgspec.Struct):
    folder: str
    website: bool


class RouteDraft(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A route generated from an OpenAPI document and not saved yet."""

    path: str
    method: str
    runnable: RunnableOut | None
    request_type: str
    auth: RouteAuthOut
    summary: str | None
    description: str | None
    workspace: str


class RouteOut(RouteDraft, kw_only=True):
    """A route as the API shows it (`route_view`), its secrets left out."""

    id: str
    raw_body: bool
    wrap_body: bool
    static: StaticOut | None
    cors: Cors | None  # which other origins' pages may call it
    created_by: str
    created_at: int
    updated_by: str
    updated_at: int
    run_as: str


class ImportOut(msgspec.Struct):
    """The routes an import generated: saved (then each is a whole `RouteOut`) or a preview."""

    saved: bool
    routes: list[RouteDraft]


class CurlOut(msgspec.Struct):
    command: str


class StaticUploaded(msgspec.Struct, forbid_unknown_fields=True):
    folder: str
    files: int
    bytes: int


class StaticFolder(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    folder: str
    files: int
    updated_at: int


class StaticFile(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    etag: str
    size: int


class SettingsOut(msgspec.Struct, rename="camel"):
    route_workspace_prefix: bool
    allow_private_urls: bool
    runner_tick: bool  # POST /api/_runner/tick is served (admins only)


def route_out(view: dict[str, Any]) -> RouteOut:
    return msgspec.convert(view, RouteOut)


class SettingsIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    route_workspace_prefix: bool | None = None
    allow_private_urls: bool | None = None  # an OpenAPI import may fetch from loopback and private addresses
    runner_tick: bool | None = None  # the workflow runner tick (POST /api/_runner/tick) is served


@get("/routes", opt={"role": "viewer"})
async def list_routes(
    request: Request, path_prefix: str | None = Parameter(query="pathPrefix", default=None)
) -> list[RouteOut]:
    services, actor = context(request)
    return [route_out(view) for view in await services.routes.list(actor.workspace, path_prefix)]


@post("/routes", opt={"role": "admin", "audit": "route.create"}, status_code=201)
async def create_route(request: Request, data: RouteSpec) -> RouteOut:
    """Create a route (workspace admins); its secrets are stored encrypted and never shown."""
    services, actor = context(request)
    return route_out(await services.routes.create(actor, data))


@get("/routes/{route_id:str}", opt={"role": "viewer"})
async def get_route(request: Request, route_id: str) -> RouteOut:
    services, actor = context(request)
    return route_out(await services.routes.get(actor.workspace, route_id))


@put("/routes/{route_id:str}", opt={"role": "editor", "audit": "route.update"})
async def update_route(request: Request, route_id: str, data: RouteSpec) -> RouteOut:
    """Change everything but the path; secrets left out are kept."""
    services, actor = context(request)
    return route_out(await services.routes.update(actor, route_id, data))


@delete("/routes/{route_id:str}", opt={"role": "editor", "audit": "route.delete"}, status_code=204)
async def delete_route(request: Request, route_id: str) -> None:
    services, actor = context(request)
    await services.routes.delete(actor, route_id)


async def _spec_text(request: Request) -> tuple[str, str]:
    """(the OpenAPI text, the folder) from a JSON body {spec | url, folder} or a multipart
    upload with fields `file` and `folder`."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload, folder = form.get("file"), form.get("folder")
        if upload is None or not hasattr(upload, "read") or not isinstance(folder, str):
            raise BadRequest("an upload has a `file` field and a `folder` field")
        return (await upload.read()).decode("utf-8", "replace"), folder
    body = await request.body()
    check_depth(body)
    try:
        given = msgspec.json.decode(body, type=ImportIn)
    except msgspec.DecodeError as error:
        raise BadRequest(f"the body is not an import request {{spec | url, folder}}: {error}") from None
    if (given.spec is None) == (given.url is None):
        raise BadRequest("give either `spec` (the document's text) or `url`")
    if given.spec is not None:
        return given.spec, given.folder
    assert given.url is not None
    services: Services = request.app.state.services
    allow_private = await services.instance.allow_private_urls()
    return await fetch_text(given.url, MAX_SPEC_BYTES, allow_private), given.folder


@post("/routes/openapi/import", opt={"role": "admin", "audit": "route.import", "body": OPENAPI_IMPORT}, status_code=200)
async def import_openapi(request: Request, save: bool = False) -> ImportOut:
    """Routes generated from an OpenAPI document: a preview, or saved with `?save=true`."""
    services, actor = context(request)
    text, folder = await _spec_text(request)
    folder = folder.strip("/")
    if not folder:
        raise BadRequest("folder is the path the generated routes go under")
    taken = {r["path"] for r in await services.routes.list(actor.workspace)}
    routes = import_routes(text, folder, taken)
    if save:
        specs = [
            msgspec.convert({k: v for k, v in r.items() if k in _SPEC_FIELDS and v is not None}, RouteSpec) for r in routes
        ]
        saved = await services.routes.create_many(actor, specs)
        return ImportOut(True, [route_out(view) for view in saved])
    return ImportOut(False, [msgspec.convert(route, RouteDraft) for route in routes])


_SPEC_FIELDS = ("path", "method", "runnable", "requestType", "auth", "summary", "description")


@post("/routes/openapi/export", opt={"role": "viewer", "audit": False}, status_code=200)
async def export(request: Request, data: ExportIn) -> Response[str]:
    """An OpenAPI 3.1 document of the workspace's routes and webhooks (YAML or JSON)."""
    services, actor = context(request)
    if data.format not in ("yaml", "json"):
        raise BadRequest("format is yaml or json")
    filters = data.filters
    unknown = set(filters) - {"pathPrefix", "kinds", "methods"}
    if unknown:
        raise BadRequest(f"unknown filters: {', '.join(sorted(unknown))} (pathPrefix, kinds, methods)")
    kinds = filters.get("kinds") or ["route", "webhook"]
    methods = [m.upper() for m in filters.get("methods") or []]
    routes = await services.routes.list(actor.workspace, filters.get("pathPrefix")) if "route" in kinds else []
    routes = [r for r in routes if not methods or r["method"] in methods]
    # A webhook's address holds its key, a secret shown to editors only.
    reveal = at_least(actor.role, "editor")
    webhooks = await services.triggers.list(actor.workspace, "webhook", reveal=True) if "webhook" in kinds and reveal else []
    text = export_openapi(
        routes, webhooks, title=data.title, version=data.version, description=data.description,
        base_url=_base_url(request), workspace_prefix=await services.routes.prefixed(), fmt=data.format,
    )
    media = "application/json" if data.format == "json" else "application/yaml"
    return Response(text, media_type=media)


@post("/routes/openapi/export/curl", opt={"role": "viewer", "audit": False}, status_code=200)
async def export_curl(request: Request, data: ExportIn) -> CurlOut:
    """The `curl` command that makes the same export."""
    body = {k: v for k, v in msgspec.to_builtins(data).items() if v not in (None, {}, "yaml")}
    return CurlOut(curl_command(_base_url(request), body))


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@put("/static/{folder:path}", opt={"role": "editor", "audit": "static.upload", "body": ARCHIVE}, status_code=200)
async def upload_static(request: Request, folder: str) -> StaticUploaded:
    """Replace a static folder with the files of a zip or tar(.gz) archive sent as the body."""
    services, actor = context(request)
    return msgspec.convert(await services.static.upload(actor, folder, await request.body()), StaticUploaded)


@get("/static", opt={"role": "viewer"})
async def list_static(request: Request) -> list[StaticFolder]:
    services, actor = context(request)
    return msgspec.convert(await services.static.folders(actor.workspace), list[StaticFolder])


@get("/static/{folder:path}", opt={"role": "viewer"})
async def list_static_files(request: Request, folder: str) -> list[StaticFile]:
    services, actor = context(request)
    return msgspec.convert(await services.static.files(actor.workspace, folder), list[StaticFile])


@delete("/static/{folder:path}", opt={"role": "editor", "audit": "static.delete"}, status_code=204)
async def delete_static(request: Request, folder: str) -> None:
    services, actor = context(request)
    await services.static.delete(actor, folder)


@get("/settings", opt={"role": "viewer"})
async def get_settings(request: Request) -> SettingsOut:
    services: Services = request.app.state.services
    return await _settings(services)


@put("/settings", opt={"role": "viewer", "audit": "settings.update"})
async def put_settings(request: Request, data: SettingsIn) -> SettingsOut:
    """Instance settings (instance admins); a setting left out is left as it is."""
    services, actor = context(request)
    if data.route_workspace_prefix is not None:
        await services.routes.set_prefixed(actor, data.route_workspace_prefix)
    if data.allow_private_urls is not None:
        await services.instance.set_allow_private_urls(actor, data.allow_private_urls)
    if data.runner_tick is not None:
        await services.db.write(services.instance.set_flag(actor, RUNNER_TICK, data.runner_tick))
    if data.route_workspace_prefix is None and data.allow_private_urls is None and data.runner_tick is None \
            and not actor.superadmin:
        raise Forbidden("only an instance admin changes instance settings")
    return await _settings(services)


async def _settings(services: Services) -> SettingsOut:
    return SettingsOut(await services.routes.prefixed(), await services.instance.allow_private_urls(),
                       await services.instance.flag(RUNNER_TICK))


HANDLERS = [
    list_routes, create_route, get_route, update_route, delete_route, import_openapi, export, export_curl,
    upload_static, list_static, list_static_files, delete_static,
]
INSTANCE_HANDLERS = [get_settings, put_settings]
