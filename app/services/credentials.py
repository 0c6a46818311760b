"""Credentials: named secrets of a workspace, encrypted at rest, never returned in clear.

Flows and scripts read them as `${NAME}`; `resolve` and `interpolate` are how the engine
does that. The API only ever shows their names and metadata.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from app.engine.masks import Masks
from app.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from app.security.vault import Vault
from app.services import audit
from app.services.actor import Actor, at_least, now_ms
from app.store.base import Database, Row, Statement, UniqueViolation

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,199})\}")
MAX_VALUE_BYTES = 64 * 1024
_COLUMNS = "id, name, description, created_by, created_at, updated_at"


def identity(workspace: str, name: str) -> str:
    """What a credential's ciphertext is bound to: it decrypts only as that credential."""
    return f"credential:{workspace}:{name}"


def _public(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "description": row["description"],
        "created_by": row["created_by"], "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def _check_value(value: str) -> bytes:
    data = value.encode()
    if len(data) > MAX_VALUE_BYTES:
        raise TooLarge(f"a credential's value is limited to {MAX_VALUE_BYTES} bytes")
    return data


class Credentials:
    def __init__(self, db: Database, vault: Vault, masks: Masks) -> None:
        self.db = db
        self.vault = vault
        self.masks = masks

    async def create(self, actor: Actor, name: str, value: str, description: str = "") -> dict[str, Any]:
        """Store a new secret; 409 if the name is taken in the workspace."""
        if not NAME.match(name):
            raise BadRequest("a credential's name is a letter or '_' then letters, digits or '_' (at most 200)")
        blob = self.vault.encrypt(_check_value(value), identity(actor.workspace, name))
        now = now_ms()
        row_id = str(uuid.uuid4())
        try:
            await self.db.write(
                Statement(
                    "INSERT INTO credential (id, workspace_id, name, description, ciphertext, created_by, created_at, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    (row_id, actor.workspace, name, description, blob, actor.username or "", now),
                ),
                audit.entry(actor, f"credential:{name}"),
            )
        except UniqueViolation:
            raise Conflict(f"a credential named {name} exists already") from None
        return {"id": row_id, "name": name, "description": description, "created_by": actor.username or "",
                "created_at": now, "updated_at": now}

    async def list(self, workspace: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM credential WHERE workspace_id = $1 ORDER BY name", workspace)
        return [_public(r) for r in rows]

    async def get(self, workspace: str, credential_id: str) -> dict[str, Any]:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM credential WHERE workspace_id = $1 AND id = $2", workspace, credential_id
        )
        if row is None:
            raise NotFound(f"no credential {credential_id}")
        return _public(row)

    async def update(self, actor: Actor, credential_id: str, value: str | None, description: str | None) -> dict[str, Any]:
        """Replace the value and/or the description."""
        current = await self.get(actor.workspace, credential_id)
        sets, args = ["updated_at = $1"], [now_ms()]
        if value is not None:
            args.append(self.vault.encrypt(_check_value(value), identity(actor.workspace, current["name"])))
            sets.append(f"ciphertext = ${len(args)}")
        if description is not None:
            args.append(description)
            sets.append(f"description = ${len(args)}")
        args += [actor.workspace, credential_id]
        await self.db.write(
            Statement(
                f"UPDATE credential SET {', '.join(sets)} WHERE workspace_id = ${len(args) - 1} AND id = ${len(args)}",
                tuple(args),
            ),
            audit.entry(actor, f"credential:{current['name']}"),
        )
        return await self.get(actor.workspace, credential_id)

    async def delete(self, actor: Actor, credential_id: str) -> None:
        current = await self.get(actor.workspace, credential_id)
        await self.db.write(
            Statement("DELETE FROM credential WHERE workspace_id = $1 AND id = $2", (actor.workspace, credential_id)),
            audit.entry(actor, f"credential:{current['name']}"),
        )

    async def reveal(self, actor: Actor, name: str) -> str:
        """The clear value of credential `name` for `actor` (the executor role at least: runs act
        as one); a run it is revealed to has it masked in its logs, result and error."""
        if not at_least(actor.role, "executor"):
            raise Forbidden("reading a credential needs the executor role")
        value = await self.resolve(actor.workspace, name)
        self.masks.learn(actor.run_id, value)
        return value

    async def reveal_to_run(self, actor: Actor, name: str) -> str:
        """The value for a run's own code (`flowmill.get_credential`): only a run's token gets
        it, never a person's, and each reading is in the audit log."""
        if actor.run_id is None:
            raise Forbidden("a credential's value is given only to runs (flowmill.get_credential inside a script)")
        value = await self.reveal(actor, name)
        await self.db.write(audit.entry(actor, f"credential:{name}", action="credential.read"))
        return value

    async def resolve(self, workspace: str, name: str) -> str:
        """The clear value of credential `name`, for the engine only."""
        blob = await self.db.fetchval("SELECT ciphertext FROM credential WHERE workspace_id = $1 AND name = $2", workspace, name)
        if blob is None:
            raise NotFound(f"no credential named {name}")
        return self.vault.decrypt(bytes(blob), identity(workspace, name)).decode()

    async def interpolate(self, workspace: str, text: str) -> str:
        """`text` with every `${NAME}` replaced by that credential's value."""
        names = set(REFERENCE.findall(text))
        values = {name: await self.resolve(workspace, name) for name in names}
        return REFERENCE.sub(lambda m: values[m.group(1)], text)
