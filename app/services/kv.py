"""The key-value store: JSON values under (workspace, namespace, key), kept across runs."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from app.errors import BadRequest, NotFound, TooLarge
from app.services import audit
from app.services.actor import Actor, now_ms
from app.store.base import Database, Statement

NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@=+-]{0,511}$")
MAX_PAGE = 1000

_UPSERT = (
    "INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $6) "
    "ON CONFLICT (workspace_id, namespace, key) DO UPDATE SET "
    "value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at"
)
_GET = "SELECT value, updated_at FROM kv_entry WHERE workspace_id = $1 AND namespace = $2 AND key = $3"
_DELETE = "DELETE FROM kv_entry WHERE workspace_id = $1 AND namespace = $2 AND key = $3"


def check_name(namespace: str, key: str | None = None) -> None:
    """Reject names that could be read as paths or carry control characters."""
    if not NAMESPACE.match(namespace) or ".." in namespace:
        raise BadRequest("a namespace is 1-200 characters of letters, digits, '_', '.', '-', without '..'")
    if key is not None and (not KEY.match(key) or ".." in key):
        raise BadRequest("a key is 1-512 characters of letters, digits and _ . : @ = + -, without '..'")


class KeyValueStore:
    def __init__(self, db: Database, max_value_bytes: int) -> None:
        self.db = db
        self.max_value_bytes = max_value_bytes

    def encode(self, body: bytes) -> str:
        """Validate a request body as one JSON value and return its canonical text."""
        if len(body) > self.max_value_bytes:
            raise TooLarge(f"a KV value is limited to {self.max_value_bytes} bytes")
        if not body.strip():
            raise BadRequest("the body must be a JSON value")
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from None
        return msgspec.json.encode(value).decode()

    async def put(self, actor: Actor, namespace: str, key: str, value_json: str) -> int:
        """Set the entry (created or replaced); returns its update time in epoch ms."""
        check_name(namespace, key)
        now = now_ms()
        await self.db.write(
            Statement(_UPSERT, (actor.workspace, namespace, key, value_json, actor.username or "", now)),
            audit.entry(actor, f"kv:{namespace}/{key}"),
        )
        return now

    async def get(self, workspace: str, namespace: str, key: str) -> tuple[str, int]:
        """(value as JSON text, update time); 404 if absent."""
        check_name(namespace, key)
        row = await self.db.fetchrow(_GET, workspace, namespace, key)
        if row is None:
            raise NotFound(f"no key {key} in namespace {namespace}")
        return row["value"], row["updated_at"]

    async def delete(self, actor: Actor, namespace: str, key: str) -> None:
        check_name(namespace, key)
        results = await self.db.write(
            Statement(_DELETE, (actor.workspace, namespace, key)),
            audit.entry(actor, f"kv:{namespace}/{key}"),
        )
        if results[0].rowcount == 0:
            raise NotFound(f"no key {key} in namespace {namespace}")

    async def keys(
        self, workspace: str, namespace: str, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Keys in key order from after `cursor`; (items, next cursor or None)."""
        check_name(namespace)
        limit = max(1, min(limit, MAX_PAGE))
        # substr, not LIKE: no wildcard escaping, and the same meaning under any collation.
        rows = await self.db.fetch(
            "SELECT key, updated_at FROM kv_entry WHERE workspace_id = $1 AND namespace = $2 "
            "AND substr(key, 1, $3) = $4 AND key > $5 ORDER BY key LIMIT $6",
            workspace, namespace, len(prefix), prefix, cursor or "", limit + 1,
        )
        items = [{"key": r["key"], "updated_at": r["updated_at"]} for r in rows[:limit]]
        return items, (items[-1]["key"] if len(rows) > limit else None)
