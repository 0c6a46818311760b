"""HTTP routes: what a workspace serves under /api/r/..., and how a request finds its route.

A route is kept as a row and, for serving, in an in-memory table rebuilt when routes change
(on PostgreSQL, where other processes change them too, at most a second after). The
uniqueness rule of the mode in force (instance-wide paths, or per workspace under a
workspace prefix) is enforced by the database: `route_key` is the path with parameter names
blanked, prefixed by the workspace in prefix mode, and unique with the method.

A route's runs act as whoever last created or changed it (`updated_by`, shown as `runAs`),
as in Windmill: an editor who repoints an admin's route makes its runs act as the editor.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from typing import Any

import msgspec

from app.errors import BadRequest, Conflict, Forbidden, NotFound
from app.security.signatures import SECRET_FIELDS, public_view, secret_headers, validate_auth
from app.security.vault import Vault
from app.services.actor import Actor, at_least, now_ms, refuse_run_token
from app.services.cors import Cors, CorsPolicy, checked_cors
from app.services.instance import ROUTE_WORKSPACE_PREFIX, InstanceSettings
from app.store.base import Database, Row, Statement

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REQUEST_TYPES = ("sync", "async", "sync_sse")
MAX_PATH = 600
_SEGMENT = re.compile(r"^(:[A-Za-z_][A-Za-z0-9_]{0,63}|[A-Za-z0-9_.~@+-]{1,255})$")
# Checking that a path is free in other workspaces and taking it are one step, across every
# process serving the database (on PostgreSQL an advisory lock): `(route_key, method)` is
# unique in the database, but the overlap of two workspaces' paths is checked in Python.
_CLAIMING = "route paths"
_COLUMNS = (
    "id, workspace_id, path, method, runnable_kind, runnable_path, request_type, auth, auth_secret, summary, "
    "description, raw_body, wrap_body, static_folder, static_website, cors, created_by, created_at, updated_by, updated_at"
)


class Runnable(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    path: str


class Static(msgspec.Struct, forbid_unknown_fields=True):
    folder: str
    website: bool = False


class RouteSpec(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A route as submitted; on update every field but `path` may change."""

    path: str | None = None
    method: str = "POST"
    runnable: Runnable | None = None
    request_type: str = "sync"
    auth: dict[str, Any] = msgspec.field(default_factory=lambda: {"kind": "none"})
    summary: str = ""
    description: str = ""
    raw_body: bool = False
    wrap_body: bool = False
    static: Static | None = None
    cors: Cors | None = None  # which other origins' pages may call it (none: no CORS answers)


@dataclasses.dataclass
class Route:
    """A route as served."""

    id: str
    workspace: str
    path: str
    segments: tuple[str, ...]
    method: str
    runnable: Runnable | None
    request_type: str
    auth: dict[str, Any]  # with its secrets, decrypted
    summary: str
    raw_body: bool
    wrap_body: bool
    static: Static | None
    run_as: str  # who last created or changed it: its runs act as them
    hidden_headers: frozenset[str]  # carried its secret or a caller's credentials: kept from its runs
    cors: CorsPolicy | None = None


def normalise_path(path: str) -> str:
    """`/hooks//users/:id/` -> `hooks/users/:id`; BadRequest for what cannot be a route path."""
    segments = [s for s in path.strip().split("/") if s]
    if not segments:
        raise BadRequest("a route needs a path")
    for segment in segments:
        if segment in (".", "..") or not _SEGMENT.match(segment):
            raise BadRequest(f"route path segment {segment[:80]!r} is not allowed (letters, digits, _.~@+- or :param)")
    names = [s for s in segments if s.startswith(":")]
    if len(names) != len(set(names)):
        raise BadRequest("a route path names each parameter once")
    joined = "/".join(segments)
    if len(joined) > MAX_PATH:
        raise BadRequest(f"a route path has at most {MAX_PATH} characters")
    return joined


def route_key(workspace: str, path: str, prefixed: bool) -> str:
    blanked = "/".join(":" if s.startswith(":") else s for s in path.split("/"))
    return f"{workspace}/{blanked}" if prefixed else blanked


class RouteTable:
    """The served routes, looked up by request path."""

    def __init__(self, routes: list[Route], prefixed: bool) -> None:
        self.prefixed = prefixed
        self.exact: dict[tuple[str, str], dict[str, Route]] = {}
        self.patterns: dict[int, list[Route]] = {}
        self.statics: list[Route] = []
        for route in routes:
            scope = route.workspace if prefixed else ""
            if route.static is not None:
                self.statics.append(route)
            elif any(s.startswith(":") for s in route.segments):
                self.patterns.setdefault(len(route.segments), []).append(route)
            else:
                self.exact.setdefault((scope, route.path), {})[route.method] = route
        for candidates in self.patterns.values():  # the most literal segments first
            candidates.sort(key=lambda r: sum(s.startswith(":") for s in r.segments))
        self.statics.sort(key=lambda r: -len(r.segments))

    def match(self, workspace: str, path: str) -> tuple[dict[str, Route], dict[str, str], str]:
        """(route by method, path parameters, the rest of the path for static routes)."""
        exact = self.exact.get((workspace, path))
        if exact:
            return exact, {}, ""
        parts = path.split("/")
        by_method: dict[str, Route] = {}
        params: dict[str, str] = {}
        for route in self.patterns.get(len(parts), ()):
            if self.prefixed and route.workspace != workspace:
                continue
            found = _bind(route.segments, parts)
            if found is not None and route.method not in by_method:
                if not by_method:
                    params = found
                    by_method[route.method] = route
                elif found == params:
                    by_method[route.method] = route
        if by_method:
            return by_method, params, ""
        for route in self.statics:
            if (not self.prefixed or route.workspace == workspace) and tuple(parts[: len(route.segments)]) == route.segments:
                return {route.method: route}, {}, "/".join(parts[len(route.segments):])
        return {}, {}, ""


def overlap(a: tuple[str, ...], a_static: bool, b: tuple[str, ...], b_static: bool) -> bool:
    """Whether some request path could be served by both routes, whatever their methods: segment
    by segment the same literal or a parameter on either side; a static route also serves every
    path beneath its own."""
    if len(a) != len(b) and not (a_static and len(b) > len(a)) and not (b_static and len(a) > len(b)):
        return False
    return all(x == y or x.startswith(":") or y.startswith(":") for x, y in zip(a, b))


def _bind(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    params = {}
    for segment, part in zip(segments, parts):
        if segment.startswith(":"):
            if not part:
                return None
            params[segment[1:]] = part
        elif segment != part:
            return None
    return params


class Routes:
    def __init__(self, db: Database, vault: Vault, instance: InstanceSettings) -> None:
        self.db = db
        self.vault = vault
        self.instance = instance
        self._table: RouteTable | None = None
        self._loaded = 0.0
        # One process owns a SQLite database, so its own changes are all there is to see.
        self._max_age = float("inf") if db.dialect == "sqlite" else 1.0

    # -- serving ----------------------------------------------------------------------------------

    async def table(self) -> RouteTable:
        """The routes as served, reloaded after a change."""
        if self._table is None or time.monotonic() - self._loaded > self._max_age:
            prefixed = await self.prefixed()
            rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM route")
            self._table = RouteTable([self._served(r) for r in rows], prefixed)
            self._loaded = time.monotonic()
        return self._table

    def _served(self, row: Row) -> Route:
        auth = msgspec.json.decode(row["auth"])
        if row["auth_secret"] is not None:
            auth.update(msgspec.json.decode(self.vault.decrypt(row["auth_secret"], f"route:{row['id']}")))
        return Route(
            id=row["id"], workspace=row["workspace_id"], path=row["path"], segments=tuple(row["path"].split("/")),
            method=row["method"], runnable=_runnable(row), request_type=row["request_type"], auth=auth,
            summary=row["summary"], raw_body=bool(row["raw_body"]), wrap_body=bool(row["wrap_body"]),
            static=Static(row["static_folder"], bool(row["static_website"])) if row["static_folder"] else None,
            run_as=row["updated_by"], hidden_headers=secret_headers(auth),
            cors=CorsPolicy.of(msgspec.json.decode(row["cors"])) if row["cors"] else None,
        )

    def changed(self) -> None:
        self._table = None

    async def prefixed(self) -> bool:
        return await self.instance.flag(ROUTE_WORKSPACE_PREFIX)

    async def set_prefixed(self, actor: Actor, on: bool) -> None:
        """Serve routes under /api/r/{workspace}/... (on) or not; 409 when the paths of two
        workspaces would then collide."""
        async with self.db.exclusive(_CLAIMING):
            await self._switch_prefix(actor, on)
        self.changed()

    async def _switch_prefix(self, actor: Actor, on: bool) -> None:
        switch = self.instance.set_flag(actor, ROUTE_WORKSPACE_PREFIX, on)
        rows = await self.db.fetch("SELECT id, workspace_id, path, method, static_folder FROM route")
        if not on:
            for i, row in enumerate(rows):
                for other in rows[i + 1:]:
                    if other["workspace_id"] != row["workspace_id"] and overlap(
                        tuple(row["path"].split("/")), row["static_folder"] is not None,
                        tuple(other["path"].split("/")), other["static_folder"] is not None,
                    ):
                        raise Conflict(f"routes {row['path']} and {other['path']} of two workspaces would collide "
                                       "without a prefix")
        seen = {(route_key(row["workspace_id"], row["path"], on), row["method"]): row["id"] for row in rows}
        statements = [
            Statement("UPDATE route SET route_key = $1 WHERE id = $2", (f"!{row['id']}", row["id"])) for row in rows
        ]  # first out of the way of each other, then the keys of the new mode
        statements += [Statement("UPDATE route SET route_key = $1 WHERE id = $2", (key[0], id_)) for key, id_ in seen.items()]
        await self.db.write(*statements, switch)

    # -- managing ---------------------------------------------------------------------------------

    async def create(self, actor: Actor, spec: RouteSpec) -> dict[str, Any]:
        """A new route (workspace admins only)."""
        return (await self.create_many(actor, [spec]))[0]

    async def create_many(self, actor: Actor, specs: list[RouteSpec]) -> list[dict[str, Any]]:
        """New routes, all or none (workspace admins only)."""
        if not at_least(actor.role, "admin"):
            raise Forbidden("creating a route needs the admin role")
        # A route runs as whoever last changed it: made by a run, it would act as the run's
        # identity after the run is over.
        refuse_run_token(actor, "create routes")
        async with self.db.exclusive(_CLAIMING):  # the mode, the check and the write: one step
            return await self._create_many(actor, specs)

    async def _create_many(self, actor: Actor, specs: list[RouteSpec]) -> list[dict[str, Any]]:
        prefixed = await self.prefixed()
        statements, ids = [], []
        for spec in specs:
            if spec.path is None:
                raise BadRequest("a route needs a path")
            path = normalise_path(spec.path)
            auth, secret = self._checked(spec, None)
            route_id = str(uuid.uuid4())
            values = self._values(spec, auth, secret, route_id)
            statements.append(Statement(
                f"INSERT INTO route ({_COLUMNS}, route_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                "$13, $14, $15, $16, $17, $18, $17, $18, $19)",
                (route_id, actor.workspace, path, spec.method, *values, actor.username or "", now_ms(),
                 route_key(actor.workspace, path, prefixed)),
            ))
            ids.append(route_id)
        where = f"{specs[0].method} {specs[0].path}" if len(specs) == 1 else "of these paths"
        if not prefixed:
            await self._check_unclaimed(actor.workspace, [(normalise_path(s.path or ""), s.static is not None) for s in specs])
        await self._write_unique(statements, where)
        return [await self.get(actor.workspace, route_id) for route_id in ids]

    async def _check_unclaimed(self, workspace: str, paths: list[tuple[str, bool]]) -> None:
        """Without a workspace prefix, a path belongs to one workspace: 409 when a route of
        another one could serve any request these paths would (any method, any :param)."""
        rows = await self.db.fetch("SELECT path, static_folder FROM route WHERE workspace_id <> $1", workspace)
        for path, static in paths:
            segments = tuple(path.split("/"))
            for row in rows:
                if overlap(segments, static, tuple(row["path"].split("/")), row["static_folder"] is not None):
                    raise Conflict(f"the path {path} overlaps a route of another workspace; without the workspace "
                                   "prefix a path belongs to one workspace")

    async def update(self, actor: Actor, route_id: str, spec: RouteSpec) -> dict[str, Any]:
        """Change all but the path (editors and admins)."""
        if not at_least(actor.role, "editor"):
            raise Forbidden("changing a route needs the editor role")
        refuse_run_token(actor, "change routes")
        row = await self._row(actor.workspace, route_id)
        if spec.path is not None and normalise_path(spec.path) != row["path"]:
            raise BadRequest("a route's path cannot change: create a new route and delete this one")
        auth, secret = self._checked(spec, row)
        values = self._values(spec, auth, secret, route_id)
        async with self.db.exclusive(_CLAIMING):
            if spec.static is not None and not await self.prefixed():  # a static route claims what lies beneath it
                await self._check_unclaimed(actor.workspace, [(row["path"], True)])
            await self._write_unique([Statement(
                "UPDATE route SET method = $1, runnable_kind = $2, runnable_path = $3, request_type = $4, auth = $5, "
                "auth_secret = $6, summary = $7, description = $8, raw_body = $9, wrap_body = $10, static_folder = $11, "
                "static_website = $12, cors = $13, updated_by = $14, updated_at = $15 WHERE id = $16",
                (spec.method, *values, actor.username or "", now_ms(), route_id),
            )], f"{spec.method} {row['path']}")
        return await self.get(actor.workspace, route_id)

    async def delete(self, actor: Actor, route_id: str) -> None:
        if not at_least(actor.role, "editor"):
            raise Forbidden("deleting a route needs the editor role")
        await self._row(actor.workspace, route_id)
        await self.db.write(Statement("DELETE FROM route WHERE id = $1", (route_id,)))
        self.changed()

    async def get(self, workspace: str, route_id: str) -> dict[str, Any]:
        return route_view(await self._row(workspace, route_id))

    async def list(self, workspace: str, path_prefix: str | None = None) -> list[dict[str, Any]]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM route WHERE workspace_id = $1 ORDER BY path, method", workspace)
        return [route_view(r) for r in rows if path_prefix is None or r["path"].startswith(path_prefix)]

    async def _row(self, workspace: str, route_id: str) -> Row:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM route WHERE id = $1 AND workspace_id = $2", route_id, workspace)
        if row is None:
            raise NotFound(f"no route {route_id}")
        return row

    async def _write_unique(self, statements: list[Statement], which: str) -> None:
        try:
            await self.db.write(*statements)
        except Exception as error:
            if "unique" in str(error).lower():
                raise Conflict(f"a route {which} (or one of the same shape: only parameter names differ) exists already") from None
            raise
        self.changed()

    def _checked(self, spec: RouteSpec, row: Row | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(public auth settings, secret ones) of a valid spec; BadRequest otherwise."""
        if spec.method not in METHODS:
            raise BadRequest(f"method must be one of {', '.join(METHODS)}")
        if spec.request_type not in REQUEST_TYPES:
            raise BadRequest(f"requestType must be one of {', '.join(REQUEST_TYPES)}")
        if spec.runnable is not None:
            if spec.runnable.kind not in ("script", "flow"):
                raise BadRequest("a route runs a script or a flow (runnable.kind script or flow)")
            if not spec.runnable.path.strip("/"):
                raise BadRequest("runnable.path is empty")
        if spec.static is not None:
            if spec.runnable is not None:
                raise BadRequest("a route serves either static files or a runnable, not both")
            if spec.method != "GET":
                raise BadRequest("static files are served with GET")
            if not spec.static.folder or ".." in spec.static.folder.split("/"):
                raise BadRequest("static.folder is not a folder name")
        if spec.cors is not None:
            checked_cors(spec.cors, spec.method)
        if len(spec.summary) > 1000 or len(spec.description) > 10_000:
            raise BadRequest("summary is at most 1,000 characters, description 10,000")
        auth = dict(spec.auth)
        kind = auth.get("kind")
        if row is not None and row["auth_secret"] is not None and msgspec.json.decode(row["auth"]).get("kind") == kind:
            # Kept secrets: an update may send back the settings as read, without their secrets.
            kept = msgspec.json.decode(self.vault.decrypt(row["auth_secret"], f"route:{row['id']}"))
            auth = {**kept, **{k: v for k, v in auth.items() if v not in (None, "")}}
        auth = validate_auth(auth)
        fields = SECRET_FIELDS.get(auth["kind"], ())
        return public_view(auth), {k: auth[k] for k in fields if k in auth}

    def _values(self, spec: RouteSpec, auth: dict[str, Any], secret: dict[str, Any], route_id: str) -> tuple[Any, ...]:
        sealed = self.vault.encrypt(msgspec.json.encode(secret), f"route:{route_id}") if secret else None
        return (
            spec.runnable.kind if spec.runnable else None, spec.runnable.path.strip("/") if spec.runnable else None,
            spec.request_type, msgspec.json.encode(auth).decode(), sealed, spec.summary, spec.description,
            int(spec.raw_body), int(spec.wrap_body), spec.static.folder.strip("/") if spec.static else None,
            int(spec.static.website) if spec.static else 0,
            msgspec.json.encode(checked_cors(spec.cors, spec.method)).decode() if spec.cors else None,
        )


def _runnable(row: Row) -> Runnable | None:
    return Runnable(row["runnable_kind"], row["runnable_path"]) if row["runnable_kind"] else None


def route_view(row: Row) -> dict[str, Any]:
    """A route as the API shows it: its secrets left out."""
    runnable = _runnable(row)
    return {
        "id": row["id"], "workspace": row["workspace_id"], "path": row["path"], "method": row["method"],
        "runnable": {"kind": runnable.kind, "path": runnable.path} if runnable else None,
        "requestType": row["request_type"], "auth": msgspec.json.decode(row["auth"]), "summary": row["summary"],
        "description": row["description"], "rawBody": bool(row["raw_body"]), "wrapBody": bool(row["wrap_body"]),
        "static": {"folder": row["static_folder"], "website": bool(row["static_website"])} if row["static_folder"] else None,
        "cors": msgspec.json.decode(row["cors"]) if row["cors"] else None,
        "createdBy": row["created_by"], "createdAt": row["created_at"], "updatedBy": row["updated_by"],
        "updatedAt": row["updated_at"], "runAs": row["updated_by"],
    }
