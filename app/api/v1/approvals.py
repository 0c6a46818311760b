"""`/api/v1/approvals`: the approvals flow executions wait for; approve (with the form's
values) or reject one, at the role it asks for."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import Parameter

from app.api.context import context, json_body
from app.api.documented import DECISION_IN
from app.services.flow_approvals import Approval



class ApprovalOut(msgspec.Struct, rename="camel"):
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


def approval_out(approval: Approval) -> ApprovalOut:
    return ApprovalOut(**dataclasses.asdict(approval))


@get("/approvals", opt={"role": "viewer"})
async def list_approvals(
    request: Request,
    status: str | None = Parameter(default="PENDING", description="PENDING (default), APPROVED, REJECTED, TIMED_OUT"),
    execution_id: str | None = Parameter(query="executionId", default=None),
    limit: int = Parameter(default=100, ge=1, le=500),
) -> list[ApprovalOut]:
    """Approvals newest first: the pending ones unless `status` says otherwise."""
    services, actor = context(request)
    return [approval_out(a) for a in await services.approvals.list(actor.workspace, status, execution_id, limit)]


@get("/approvals/{approval_id:str}", opt={"role": "viewer"})
async def get_approval(request: Request, approval_id: str) -> ApprovalOut:
    services, actor = context(request)
    return approval_out(await services.approvals.get(actor.workspace, approval_id))


async def _decide(request: Request, approval_id: str, approve: bool) -> ApprovalOut:
    services, actor = context(request)
    body = await json_body(request)
    values = body.get("values") if isinstance(body, dict) else None
    return approval_out(await services.approvals.decide(actor, approval_id, approve, values))


@post("/approvals/{approval_id:str}/approve", opt={"role": "executor", "audit": "approval.approve", "errors": (409,),
                                                   "body": DECISION_IN}, status_code=200)
async def approve(request: Request, approval_id: str) -> ApprovalOut:
    """Approve, with the form's values (checked against it); the execution goes on."""
    return await _decide(request, approval_id, True)


@post("/approvals/{approval_id:str}/reject", opt={"role": "executor", "audit": "approval.reject", "errors": (409,),
                                                  "body": DECISION_IN}, status_code=200)
async def reject(request: Request, approval_id: str) -> ApprovalOut:
    """Reject: the approval task fails (and the execution with it, unless allowFailure)."""
    return await _decide(request, approval_id, False)


HANDLERS = [list_approvals, get_approval, approve, reject]
