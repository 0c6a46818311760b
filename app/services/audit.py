"""The audit log: an entry for every change (who, what, workspace, when, outcome).

Every mutating handler declares its action (`opt={"audit": "route.create"}`, checked when the
app is built, `app.server.audit`). A service that writes its entry in the same transaction as
its change (`entry`) makes it durable with the change; for a change whose service writes none,
the server writes one after the change is committed and before the answer is sent. A refused
or failed change is recorded afterwards by the server's error handler.
"""

from __future__ import annotations

from typing import Any

from app.services.actor import Actor, now_ms
from app.store.base import Database, Statement

INSERT = (
    "INSERT INTO audit_entry (at, workspace_id, actor, action, target, outcome, status, request_id) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
MAX_PAGE = 200


def entry(actor: Actor, target: str, outcome: str = "success", status: int | None = None, action: str = "") -> Statement:
    """The statement that records `actor` doing its action on `target`, with the status the
    request answers (by default its handler's success status: 201 for a create, 204 a delete).
    The request is then known to be audited: the server writes no second entry for it."""
    if actor.audited is not None:
        actor.audited.append(target)
    return Statement(
        INSERT,
        (now_ms(), actor.workspace[:64], actor.username, (action or actor.action)[:100], target[:600], outcome,
         actor.status if status is None else status,
         actor.request_id[:64]),
    )


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, actor: Actor, target: str, outcome: str, status: int) -> None:
        """Record a change that did not happen (refused or failed) on its own."""
        await self.db.write(entry(actor, target, outcome, status))

    async def list(
        self,
        workspace: str,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; (entries, cursor of the next page or None)."""
        clauses, args = ["workspace_id = $1"], [workspace]
        for column, value in (("actor", actor), ("action", action), ("outcome", outcome)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        for sql, value in (("at >= ${}", since_ms), ("at < ${}", until_ms), ("id < ${}", cursor)):
            if value is not None:
                args.append(value)
                clauses.append(sql.format(len(args)))
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self.db.fetch(
            f"SELECT id, at, workspace_id, actor, action, target, outcome, status, request_id FROM audit_entry "
            f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT {limit + 1}",
            *args,
        )
        items = [
            {
                "id": r["id"], "at": r["at"], "workspace": r["workspace_id"], "actor": r["actor"],
                "action": r["action"], "target": r["target"], "outcome": r["outcome"],
                "status": r["status"], "request_id": r["request_id"],
            }
            for r in rows[:limit]
        ]
        return items, (items[-1]["id"] if len(rows) > limit else None)
