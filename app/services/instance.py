"""Instance settings: switches kept in the database (shared by every process on it), changed by
instance admins only. Read and written here alone; the routes keep their prefix switch here."""

from __future__ import annotations

from app.errors import Forbidden
from app.services.actor import Actor, refuse_run_token
from app.store.base import Database, Statement

ALLOW_PRIVATE_URLS = "fetch.allow_private_urls"
ROUTE_WORKSPACE_PREFIX = "routes.workspace_prefix"


class InstanceSettings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def flag(self, key: str) -> bool:
        """Whether switch `key` is on (off until it is set)."""
        return await self.db.fetchval("SELECT value FROM instance_setting WHERE key = $1", key) == "true"

    def set_flag(self, actor: Actor, key: str, on: bool) -> Statement:
        """The statement that sets switch `key`, for `actor` if an instance admin may (written by
        the caller, with whatever else must change with it)."""
        if not actor.superadmin:
            raise Forbidden("only an instance admin changes instance settings")
        refuse_run_token(actor, "change instance settings")
        return Statement(
            "INSERT INTO instance_setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
            (key, "true" if on else "false"),
        )

    async def allow_private_urls(self) -> bool:
        """Whether the server may fetch from loopback, private and link-local addresses (an
        OpenAPI import by URL): off unless an instance admin turned it on."""
        return await self.flag(ALLOW_PRIVATE_URLS)

    async def set_allow_private_urls(self, actor: Actor, on: bool) -> None:
        await self.db.write(self.set_flag(actor, ALLOW_PRIVATE_URLS, on))
