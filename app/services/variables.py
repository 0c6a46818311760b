"""Variables: strings at a path, plain or secret (encrypted under the master key)."""

from __future__ import annotations

from typing import Any

from app.engine.masks import Masks
from app.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from app.security.vault import Vault
from app.services import audit
from app.services.actor import Actor, at_least, now_ms
from app.services.scripts import check_path
from app.store.base import Database, Row, Statement, UniqueViolation

MAX_VALUE_BYTES = 64 * 1024


def identity(workspace: str, path: str) -> str:
    return f"variable:{workspace}:{path}"


def _public(row: Row) -> dict[str, Any]:
    secret = bool(row["is_secret"])
    return {
        "path": row["path"], "is_secret": secret, "value": None if secret else row["value"],
        "description": row["description"], "updated_by": row["updated_by"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


_COLUMNS = "path, value, ciphertext, is_secret, description, updated_by, created_at, updated_at"


class Variables:
    def __init__(self, db: Database, vault: Vault, masks: Masks) -> None:
        self.db = db
        self.vault = vault
        self.masks = masks

    def _stored(self, workspace: str, path: str, value: str, secret: bool) -> tuple[str, bytes | None]:
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise TooLarge(f"a variable's value is limited to {MAX_VALUE_BYTES} bytes")
        if secret:
            return "", self.vault.encrypt(value.encode(), identity(workspace, path))
        return value, None

    async def create(self, actor: Actor, path: str, value: str, secret: bool, description: str = "") -> dict[str, Any]:
        check_path(path)
        clear, blob = self._stored(actor.workspace, path, value, secret)
        now = now_ms()
        try:
            await self.db.write(
                Statement(
                    f"INSERT INTO variable (workspace_id, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    (actor.workspace, path, clear, blob, int(secret), description, actor.username or "", now),
                ),
                audit.entry(actor, f"variable:{path}"),
            )
        except UniqueViolation:
            raise Conflict(f"a variable exists at {path} already") from None
        return await self.get(actor.workspace, path)

    async def _row(self, workspace: str, path: str) -> Row:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM variable WHERE workspace_id = $1 AND path = $2", workspace, path)
        if row is None:
            raise NotFound(f"no variable at {path}")
        return row

    async def get(self, workspace: str, path: str) -> dict[str, Any]:
        """Metadata, and the value of a plain variable (a secret's value stays hidden)."""
        return _public(await self._row(workspace, path))

    async def value(self, actor: Actor, path: str) -> str:
        """The clear value; a secret's needs at least the executor role (scripts run as one), and
        a run that reads it has it masked in what it leaves behind."""
        row = await self._row(actor.workspace, path)
        if not row["is_secret"]:
            return row["value"]
        if not at_least(actor.role, "executor"):
            raise Forbidden("reading a secret variable needs the executor role")
        value = self.vault.decrypt(bytes(row["ciphertext"]), identity(actor.workspace, path)).decode()
        self.masks.learn(actor.run_id, value)
        return value

    async def list(self, workspace: str, prefix: str = "") -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM variable WHERE workspace_id = $1 AND substr(path, 1, $2) = $3 ORDER BY path",
            workspace, len(prefix), prefix,
        )
        return [_public(r) for r in rows]

    async def update(
        self, actor: Actor, path: str, value: str | None = None, secret: bool | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Change the value, its secrecy or the description."""
        row = await self._row(actor.workspace, path)
        is_secret = bool(row["is_secret"]) if secret is None else secret
        if value is None and secret is not None and secret != bool(row["is_secret"]):
            if not row["is_secret"]:
                value = row["value"]
            else:
                raise BadRequest("give the value to turn a secret variable into a plain one")
        sets, args = ["updated_at = $1", "updated_by = $2"], [now_ms(), actor.username or ""]
        if value is not None:
            clear, blob = self._stored(actor.workspace, path, value, is_secret)
            args += [clear, blob, int(is_secret)]
            sets += [f"value = ${len(args) - 2}", f"ciphertext = ${len(args) - 1}", f"is_secret = ${len(args)}"]
        if description is not None:
            args.append(description)
            sets.append(f"description = ${len(args)}")
        args += [actor.workspace, path]
        await self.db.write(
            Statement(f"UPDATE variable SET {', '.join(sets)} WHERE workspace_id = ${len(args) - 1} AND path = ${len(args)}", args),
            audit.entry(actor, f"variable:{path}"),
        )
        return await self.get(actor.workspace, path)

    async def delete(self, actor: Actor, path: str) -> None:
        results = await self.db.write(
            Statement("DELETE FROM variable WHERE workspace_id = $1 AND path = $2", (actor.workspace, path)),
            audit.entry(actor, f"variable:{path}"),
        )
        if results[0].rowcount == 0:
            raise NotFound(f"no variable at {path}")
