"""Windmill's resume URLs: `wmill.get_resume_urls()` and the signed URLs it hands out.

The approval page says what the run is doing; resume stores the answer (with the POST's JSON
body as its payload) and wakes the run waiting for it; cancel refuses the approval and cancels
the run. Like Windmill's, these take no token: the signature is the authority (403 for a
forged one); 409 when the run is final or the approval was answered already.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post

from app.api.context import context, json_body
from app.services.approvals import Approvals


class ResumeUrls(msgspec.Struct, rename="camel"):
    approval_page: str
    resume: str
    cancel: str


class Answered(msgspec.Struct, rename="camel"):
    """The run once the approval is answered."""

    job_id: str
    status: str


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


@get("/jobs/wac_approval_urls/{job_id:str}/{step_key:str}", opt={"role": "viewer"})
async def wac_approval_urls(request: Request, job_id: str, step_key: str, approver: str | None = None) -> ResumeUrls:
    """The signed URLs that answer the approval step `step_key` of workflow run `job_id`
    (`wmill.get_approval_urls(key)`): its resume id is the step key."""
    _, actor = context(request)
    urls = await _approvals(request).urls(actor, _base_url(request), job_id, step_key, approver or "")
    return ResumeUrls(**urls)


@get("/jobs_u/approval/{job_id:str}/{resume_id:str}/{signature:str}")
async def approval_page(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> ApprovalStatus:
    """What an approver opens: the run's status and whether it waits for an approval."""
    found: dict[str, Any] = await _approvals(request).status(workspace, job_id, resume_id, signature, approver or "")
    return ApprovalStatus(**found)


async def _answer(request: Request, job_id: str, resume_id: str, signature: str, approver: str | None,
                  approve: bool) -> Answered:
    _, actor = context(request)
    payload = await json_body(request) if request.method == "POST" else None
    job = await _approvals(request).answer(actor, job_id, resume_id, signature, approver or "", approve, payload)
    return Answered(job["id"], job["status"])


@get("/jobs_u/resume/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_resume_get", opt={"errors": (409,)})
async def resume_by_get(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> Answered:
    """Approve (a link in a message): the run waiting for this approval goes on."""
    return await _answer(request, job_id, resume_id, signature, approver, approve=True)


# role None: public, the signature in the link is the authority.
@post("/jobs_u/resume/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_resume_post",
      opt={"role": None, "audit": "job.resume", "errors": (409,)}, status_code=200)
async def resume_by_post(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> Answered:
    """Approve with a payload (the JSON body), which the run's wait_for_approval returns."""
    return await _answer(request, job_id, resume_id, signature, approver, approve=True)


@get("/jobs_u/cancel/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_cancel_get", opt={"errors": (409,)})
async def cancel_by_get(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> Answered:
    """Refuse the approval (a link in a message): the run is cancelled."""
    return await _answer(request, job_id, resume_id, signature, approver, approve=False)


@post("/jobs_u/cancel/{job_id:str}/{resume_id:str}/{signature:str}", name="windmill_cancel_post",
      opt={"role": None, "audit": "job.cancel", "errors": (409,)}, status_code=200)
async def cancel_by_post(
    request: Request, workspace: str, job_id: str, resume_id: str, signature: str, approver: str | None = None
) -> Answered:
    """Refuse the approval: the run is cancelled."""
    return await _answer(request, job_id, resume_id, signature, approver, approve=False)


HANDLERS = [resume_urls, wac_approval_urls, approval_page, resume_by_get, resume_by_post, cancel_by_get, cancel_by_post]
