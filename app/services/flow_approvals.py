"""Approvals of flow executions: what `flow.approval` waits for, and who decided it.

When an execution reaches a `flow.approval` task it opens an approval (PENDING, with its
message, its optional form, the role needed to decide and when it expires) and waits without a
slot. Deciding it (`approve` with the form's values, or `reject`) records who and when and
wakes the execution in the same commit; the decision's values are the task's outputs. An
approval that expires first takes its `default` outcome (reject unless it says approve).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from app.engine import queue
from app.engine.executor import Executor, now_ms
from app.errors import BadRequest, Conflict, Forbidden, NotFound
from app.ids import random_uuid
from app.services import audit
from app.services.actor import ROLES, Actor, at_least
from app.store.base import Database, Row, Statement

_COLUMNS = ("id, workspace_id, job_id, task, message, form, role, status, form_values, decided_by, decided_at, "
            "created_at, expires_at")
DEFAULT_ROLE = "executor"
FORM_TYPES = ("string", "integer", "number", "boolean", "json", "select", "multiselect")


@dataclasses.dataclass(frozen=True)
class Approval:
    id: str
    workspace: str
    execution_id: str
    task: str
    message: str
    form: list[dict[str, Any]]
    role: str
    status: str  # PENDING, APPROVED, REJECTED, TIMED_OUT
    values: dict[str, Any]
    decided_by: str | None
    decided_at: int | None
    created_at: int
    expires_at: int | None


def _approval(row: Row) -> Approval:
    return Approval(row["id"], row["workspace_id"], row["job_id"], row["task"], row["message"],
                    msgspec.json.decode(row["form"]) if row["form"] else [], row["role"], row["status"],
                    msgspec.json.decode(row["form_values"]) if row["form_values"] else {}, row["decided_by"],
                    row["decided_at"], row["created_at"], row["expires_at"])


def _form(value: Any) -> list[dict[str, Any]]:
    """A form as given to `flow.approval`: a list of fields {name, type?, required?, values?, description?}."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in value):
        raise BadRequest("an approval's form is a list of fields, each with a name")
    return value


def check_values(form: list[dict[str, Any]], values: Any) -> dict[str, Any]:
    """The decision's values checked against the form: every bad field named (400)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise BadRequest("an approval's values are an object")
    errors = []
    fields = {f["name"]: f for f in form}
    for name in values:
        if name not in fields:
            errors.append({"path": f"values.{name}", "message": "the form has no such field"})
    for name, field in fields.items():
        kind = field.get("type", "string")
        if name not in values:
            if field.get("required"):
                errors.append({"path": f"values.{name}", "message": "required"})
            elif "default" in field:
                values = {**values, name: field["default"]}
            continue
        value = values[name]
        ok = {
            "string": isinstance(value, str), "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool), "boolean": isinstance(value, bool),
            "select": value in field.get("values", []),
            "multiselect": isinstance(value, list) and all(v in field.get("values", []) for v in value),
        }.get(kind, True)
        if not ok:
            errors.append({"path": f"values.{name}", "message": f"not a valid {kind}"})
    if errors:
        raise BadRequest("the approval's values do not fit its form", {"errors": errors})
    return values


class FlowApprovals:
    """The approvals of flow executions."""

    def __init__(self, db: Database, executor: Executor) -> None:
        self.db = db
        self.executor = executor

    # -- the runner's side ------------------------------------------------------------------------------

    async def open(self, ex: Any, key: str, props: dict[str, Any], expires_at: int | None) -> str:
        """Open a PENDING approval for task `key` of execution `ex`; its id."""
        role = props.get("role") or DEFAULT_ROLE
        if role not in ROLES:
            raise BadRequest(f"an approval's role is one of {', '.join(ROLES)}")
        approval_id = random_uuid()
        await self.db.write(Statement(
            f"INSERT INTO approval ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', NULL, NULL, NULL, $8, $9)",
            (approval_id, ex.job.workspace, ex.job.id, key, str(props.get("message") or ""),
             msgspec.json.encode(_form(props.get("form"))).decode(), role, now_ms(), expires_at),
        ))
        return approval_id

    async def state(self, approval_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT status, form_values, decided_by FROM approval WHERE id = $1", approval_id)
        if row is None:
            return None
        return {"status": row["status"], "values": msgspec.json.decode(row["form_values"]) if row["form_values"] else {},
                "decided_by": row["decided_by"]}

    async def close(self, approval_id: str, status: str) -> None:
        """An approval that expired: its default outcome recorded."""
        await self.db.write(Statement(
            "UPDATE approval SET status = $1, decided_at = $2 WHERE id = $3 AND status = 'PENDING'",
            (status, now_ms(), approval_id)))

    # -- people's side ------------------------------------------------------------------------------------

    async def get(self, workspace: str, approval_id: str) -> Approval:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM approval WHERE id = $1 AND workspace_id = $2",
                                     approval_id, workspace)
        if row is None:
            raise NotFound(f"no approval {approval_id}")
        return _approval(row)

    async def list(self, workspace: str, status: str | None = "PENDING", execution_id: str | None = None,
                   limit: int = 100) -> list[Approval]:
        """Approvals of the workspace, newest first (the pending ones by default)."""
        clauses, args = ["workspace_id = $1"], [workspace]
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if execution_id is not None:
            args.append(execution_id)
            clauses.append(f"job_id = ${len(args)}")
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM approval WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC "
            f"LIMIT {max(1, min(limit, 500))}", *args)
        return [_approval(row) for row in rows]

    async def decide(self, actor: Actor, approval_id: str, approve: bool, values: Any = None) -> Approval:
        """Approve (with the form's values) or reject a pending approval, and wake its
        execution. Forbidden below the approval's role; Conflict once decided."""
        approval = await self.get(actor.workspace, approval_id)
        if not at_least(actor.role, approval.role):
            raise Forbidden(f"deciding this approval needs the {approval.role} role")
        if approval.status != "PENDING":
            raise Conflict(f"the approval is {approval.status}", {"status": approval.status})
        values = check_values(approval.form, values) if approve else ({} if values is None else values)
        if not isinstance(values, dict):
            raise BadRequest("an approval's values are an object")
        now = now_ms()
        results = await self.db.write(
            Statement("UPDATE approval SET status = $1, form_values = $2, decided_by = $3, decided_at = $4 "
                      "WHERE id = $5 AND status = 'PENDING'",
                      ("APPROVED" if approve else "REJECTED", msgspec.json.encode(values).decode(), actor.username,
                       now, approval_id)),
            queue.wake_for(approval.execution_id, "approval", approval.execution_id, now),
            audit.entry(actor, f"approval:{approval_id}"),
        )
        if not results[0].rowcount:
            raise Conflict("the approval was decided meanwhile")
        if results[1].rowcount:
            await self.executor.submit_woken([approval.execution_id])
        return await self.get(actor.workspace, approval_id)
