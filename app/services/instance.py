"""Instance settings kept in the database (shared by every process on it), other than the
route prefix, which the routes own."""

from __future__ import annotations

from app.errors import Forbidden
from app.services.actor import Actor, refuse_run_token
from app.store.base import Database, Statement

ALLOW_PRIVATE_URLS = "fetch.allow_private_urls"


class InstanceSettings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def allow_private_urls(self) -> bool:
        """Whether the server may fetch from loopback, private and link-local addresses (an
        OpenAPI import by URL): off unless an instance admin turned it on."""
        return await self.db.fetchval("SELECT value FROM instance_setting WHERE key = $1", ALLOW_PRIVATE_URLS) == "true"

    async def set_allow_private_urls(self, actor: Actor, on: bool) -> None:
        if not actor.superadmin:
            raise Forbidden("only an instance admin changes instance settings")
        refuse_run_token(actor, "change instance settings")
        await self.db.write(Statement(
            "INSERT INTO instance_setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
            (ALLOW_PRIVATE_URLS, "true" if on else "false"),
        ))
