"""Windmill's resume URLs: `wmill.get_resume_urls()` and the signed URLs it hands out.

The URLs are real: the approval page answers what the run is doing, and resume / cancel
check the signature. No Flowmill script can suspend yet, so they answer 409 ("this job is
not waiting") for a genuine URL, 403 for a forged one. Like Windmill's, these three take no
token: the signature is the authority.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post

from app.api.context import context
from app.services.approvals import Approvals


class ResumeUrls(msgspec.Struct, rename="camel"):
    approval_page: str
    resume: str
    cancel: str


class ApprovalStatus(msgspec.Struct):
    job_id: str
    resume_id: str
    approver: str | None
    status: str
    waiting: bool
    message: str


def _approvals(request: Request) -> Approvals:
    services, _ = context(request)
    return Approvals(services.jobs, services.accounts.jwt)


def _base_url(request: Request) -> str:
    # The address the caller reached us by: inside a run that is WM_BASE_URL, outside
    # whatever host (and proxy) the caller used.
    return str(request.base_url).rstrip("/")


@get("/jobs/resume_urls/{job_id:str}/{resume_id:str}", opt={"role": "viewer"})
async def resume_urls(request: Request, job_id: str, resume_id: str, approver: str | None = None) -> ResumeUrls:
    """Signed approval page, resume and cancel URLs for run `job_id` (404 if there is none)."""
    _, actor = context(request)
    urls = await _approvals(request).urls(actor, _base_url(request), job_id, resume_id, approver or "")
    return ResumeUrls(**urls)


@get("/jobs_u/approval/{job_id:str}/{resume_id:str}/{signature:str}")
async def approval_page(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> ApprovalStatus:
    """What an approver opens: the run's status and whether it waits for an approval."""
    found: dict[str, Any] = await _approvals(request).status(workspace, job_id, resume_id, signature, approver or "")
    return ApprovalStatus(**found)


@get("/jobs_u/resume/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_resume_get")
async def resume_by_get(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> None:
    """Resume a waiting run (a link in a message): no run waits yet, so 409."""
    await _approvals(request).answer(workspace, job_id, resume_id, signature, approver or "", approve=True)


# role None: public, the signature in the link is the authority.
@post("/jobs_u/resume/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_resume_post",
      opt={"role": None, "audit": "job.resume"})
async def resume_by_post(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> None:
    """Resume a waiting run with a payload: no run waits yet, so 409."""
    await _approvals(request).answer(workspace, job_id, resume_id, signature, approver or "", approve=True)


@get("/jobs_u/cancel/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_cancel_get")
async def cancel_by_get(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> None:
    """Refuse the approval of a waiting run: no run waits yet, so 409."""
    await _approvals(request).answer(workspace, job_id, resume_id, signature, approver or "", approve=False)


@post("/jobs_u/cancel/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_cancel_post",
      opt={"role": None, "audit": "job.cancel"})
async def cancel_by_post(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> None:
    """Refuse the approval of a waiting run: no run waits yet, so 409."""
    await _approvals(request).answer(workspace, job_id, resume_id, signature, approver or "", approve=False)


HANDLERS = [resume_urls, approval_page, resume_by_get, resume_by_post, cancel_by_get, cancel_by_post]
