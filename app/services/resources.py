"""Resources: typed JSON settings at a path, and the resource types that describe them.

A resource's value may hold strings `$var:<path>`, `$res:<path>` and `$cred:<name>`: read
interpolated, they become that variable's value, that resource's (interpolated) value or
that credential's value, each read with the reader's rights (a secret variable or a
credential needs the executor role). A script's state is a resource of type `state`.

A run's arguments hold references the same way, but only when the run's identity wrote them
(`resolve_args`); arguments that came from outside are data (see Jobs).
"""

from __future__ import annotations

import json
from importlib import resources as package_files
from typing import Any

import msgspec

from app.errors import BadRequest, Conflict, FlowmillError, NotFound, TooLarge
from app.services import audit
from app.services.actor import Actor, now_ms
from app.services.credentials import Credentials
from app.services.scripts import check_path
from app.services.variables import Variables
from app.store.base import Database, Row, Statement, UniqueViolation

MAX_VALUE_BYTES = 1024 * 1024
MAX_DEPTH = 8
BUILT_IN_TYPES: dict[str, dict[str, Any]] = json.loads(
    package_files.files("app").joinpath("assets/resource_types.json").read_text()
)
_COLUMNS = "path, resource_type, value, description, updated_by, created_at, updated_at"
REFERENCE_PREFIXES = ("$var:", "$res:", "$cred:")


def may_hold_references(text: str) -> bool:
    """Whether JSON text may hold a reference (a quick test before walking the value)."""
    return "$var:" in text or "$res:" in text or "$cred:" in text


class UnreadableReference(BadRequest):
    """An argument names an item that does not exist or that its writer may not read: one
    answer for both, so that a caller learns nothing of which paths exist."""

    def __init__(self, argument: str, reference: str) -> None:
        super().__init__(f"the argument {argument} references {reference[:300]} which cannot be read")


def _public(row: Row) -> dict[str, Any]:
    return {
        "path": row["path"], "resource_type": row["resource_type"], "value": msgspec.json.decode(row["value"]),
        "description": row["description"], "updated_by": row["updated_by"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def _encode(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    if len(text) > MAX_VALUE_BYTES:
        raise TooLarge(f"a resource's value is limited to {MAX_VALUE_BYTES} bytes")
    return text


class Resources:
    def __init__(self, db: Database, variables: Variables, credentials: Credentials) -> None:
        self.db = db
        self.variables = variables
        self.credentials = credentials

    # -- resources -----------------------------------------------------------------------------

    async def create(
        self, actor: Actor, path: str, resource_type: str, value: Any, description: str = "", upsert: bool = False
    ) -> dict[str, Any]:
        """Store a resource (or replace it, with `upsert`)."""
        check_path(path)
        await self.type_schema(actor.workspace, resource_type)
        now = now_ms()
        conflict = (
            " ON CONFLICT (workspace_id, path) DO UPDATE SET value = excluded.value, resource_type = excluded.resource_type, "
            "updated_by = excluded.updated_by, updated_at = excluded.updated_at"
            if upsert else ""
        )
        try:
            await self.db.write(
                Statement(
                    f"INSERT INTO resource (workspace_id, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7){conflict}",
                    (actor.workspace, path, resource_type, _encode(value), description, actor.username or "", now),
                ),
                audit.entry(actor, f"resource:{path}"),
            )
        except UniqueViolation:
            raise Conflict(f"a resource exists at {path} already") from None
        return await self.get(actor.workspace, path)

    async def get(self, workspace: str, path: str) -> dict[str, Any]:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM resource WHERE workspace_id = $1 AND path = $2", workspace, path)
        if row is None:
            raise NotFound(f"no resource at {path}")
        return _public(row)

    async def exists(self, workspace: str, path: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM resource WHERE workspace_id = $1 AND path = $2", workspace, path) is not None

    async def value(self, actor: Actor, path: str, interpolate: bool = True, _depth: int = 0) -> Any:
        """The value, with `$var:` and `$res:` references resolved when `interpolate`."""
        if _depth > MAX_DEPTH:
            raise BadRequest(f"resource references nest deeper than {MAX_DEPTH} (a cycle?) at {path}")
        value = (await self.get(actor.workspace, path))["value"]
        return await self.resolve(actor, value, _depth + 1) if interpolate else value

    async def resolve(self, actor: Actor, value: Any, _depth: int = 0) -> Any:
        """`value` with every `$var:path` / `$res:path` / `$cred:NAME` string replaced by what
        it names, read with `actor`'s rights."""
        if isinstance(value, str):
            if value.startswith("$var:"):
                return await self.variables.value(actor, value[5:])
            if value.startswith("$res:"):
                return await self.value(actor, value[5:], True, _depth)
            if value.startswith("$cred:"):
                return await self.credentials.reveal(actor, value[6:])
            return value
        if isinstance(value, list):
            return [await self.resolve(actor, item, _depth) for item in value]
        if isinstance(value, dict):
            return {key: await self.resolve(actor, item, _depth) for key, item in value.items()}
        return value

    async def resolve_args(self, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
        """A run's arguments with their references resolved with `actor`'s rights (the run's
        identity, with its role now); UnreadableReference (400) naming the argument and the
        reference for an item that is missing or that `actor` may not read."""
        resolved = {}
        for name, value in args.items():
            resolved[name] = await self._resolve_argument(actor, str(name), value)
        return resolved

    async def _resolve_argument(self, actor: Actor, name: str, value: Any) -> Any:
        if isinstance(value, str):
            if not value.startswith(REFERENCE_PREFIXES):
                return value
            try:
                return await self.resolve(actor, value)
            except FlowmillError:
                raise UnreadableReference(name, value) from None
        if isinstance(value, list):
            return [await self._resolve_argument(actor, name, item) for item in value]
        if isinstance(value, dict):
            return {key: await self._resolve_argument(actor, name, item) for key, item in value.items()}
        return value

    async def list(self, workspace: str, resource_type: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM resource WHERE workspace_id = $1 AND substr(path, 1, $2) = $3 "
            "AND ($4 = '' OR resource_type = $4) ORDER BY path",
            workspace, len(prefix), prefix, resource_type or "",
        )
        return [_public(r) for r in rows]

    async def update(self, actor: Actor, path: str, value: Any = None, description: str | None = None) -> dict[str, Any]:
        current = await self.get(actor.workspace, path)
        await self.db.write(
            Statement(
                "UPDATE resource SET value = $1, description = $2, updated_by = $3, updated_at = $4 "
                "WHERE workspace_id = $5 AND path = $6",
                (_encode(current["value"] if value is None else value),
                 current["description"] if description is None else description,
                 actor.username or "", now_ms(), actor.workspace, path),
            ),
            audit.entry(actor, f"resource:{path}"),
        )
        return await self.get(actor.workspace, path)

    async def delete(self, actor: Actor, path: str) -> None:
        results = await self.db.write(
            Statement("DELETE FROM resource WHERE workspace_id = $1 AND path = $2", (actor.workspace, path)),
            audit.entry(actor, f"resource:{path}"),
        )
        if results[0].rowcount == 0:
            raise NotFound(f"no resource at {path}")

    # -- resource types --------------------------------------------------------------------------

    async def types(self, workspace: str) -> list[dict[str, Any]]:
        """Built-in types first, then the workspace's own."""
        rows = await self.db.fetch(
            "SELECT name, schema, description FROM resource_type WHERE workspace_id = $1 ORDER BY name", workspace
        )
        built_in = [
            {"name": name, "schema": t["schema"], "description": t["description"], "built_in": True}
            for name, t in sorted(BUILT_IN_TYPES.items())
        ]
        own = [
            {"name": r["name"], "schema": msgspec.json.decode(r["schema"]), "description": r["description"], "built_in": False}
            for r in rows
        ]
        return built_in + own

    async def type_schema(self, workspace: str, name: str) -> dict[str, Any]:
        """The JSON schema of a type; 400 if the type is unknown."""
        if name in BUILT_IN_TYPES:
            return BUILT_IN_TYPES[name]["schema"]
        schema = await self.db.fetchval(
            "SELECT schema FROM resource_type WHERE workspace_id = $1 AND name = $2", workspace, name
        )
        if schema is None:
            raise BadRequest(f"unknown resource type {name}")
        return msgspec.json.decode(schema)

    async def create_type(self, actor: Actor, name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
        if name in BUILT_IN_TYPES:
            raise Conflict(f"{name} is a built-in resource type")
        if not name.replace("_", "").isalnum() or not name.islower() or len(name) > 100:
            raise BadRequest("a resource type's name is lowercase letters, digits and '_'")
        if not isinstance(schema, dict):
            raise BadRequest("a resource type's schema is a JSON Schema object")
        try:
            await self.db.write(
                Statement(
                    "INSERT INTO resource_type (workspace_id, name, schema, description, created_at) VALUES ($1, $2, $3, $4, $5)",
                    (actor.workspace, name, _encode(schema), description, now_ms()),
                ),
                audit.entry(actor, f"resource_type:{name}"),
            )
        except UniqueViolation:
            raise Conflict(f"resource type {name} exists already") from None
        return {"name": name, "schema": schema, "description": description, "built_in": False}

    async def delete_type(self, actor: Actor, name: str) -> None:
        results = await self.db.write(
            Statement("DELETE FROM resource_type WHERE workspace_id = $1 AND name = $2", (actor.workspace, name)),
            audit.entry(actor, f"resource_type:{name}"),
        )
        if results[0].rowcount == 0:
            raise NotFound(f"no resource type {name} in this workspace")
