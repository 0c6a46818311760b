"""Signed URLs to resume or cancel a run that waits for an approval (Windmill's resume URLs).

`wmill.get_resume_urls()` and `flowmill.approval_urls(name)` ask for them. Resuming stores the
answer ({approved, approver, payload}) with the run's steps as `approval:<resume id>`, and wakes
the run if it waits for it (`flowmill.wait_for_approval(name)` in the run); an answer that comes
before the run waits is kept until it does. The cancel URL refuses the approval: the run is
cancelled, with the reason. A URL answers once; its signature is checked first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from app.engine.queue import FINAL
from app.errors import Conflict, Forbidden
from app.security.tokens import JwtCodec
from app.services.actor import Actor
from app.services.jobs import Jobs


class Approvals:
    """Makes and checks the signed resume URLs of runs (built per request: it holds no state)."""

    def __init__(self, jobs: Jobs, codec: JwtCodec) -> None:
        self.jobs = jobs
        self.codec = codec

    @staticmethod
    def _message(workspace: str, job_id: str, resume_id: str, approver: str) -> str:
        # A JSON array: no choice of ids can make two different tuples sign alike.
        return msgspec.json.encode(["resume", workspace, job_id, resume_id, approver]).decode()

    async def urls(self, actor: Actor, base_url: str, job_id: str, resume_id: str, approver: str = "") -> dict[str, str]:
        """The approval page, resume and cancel URLs of `job_id` (404 if there is no such run)."""
        await self.jobs.get(actor.workspace, job_id)
        signature = self.codec.sign(self._message(actor.workspace, job_id, resume_id, approver))
        where = f"{base_url}/api/w/{quote(actor.workspace, safe='')}/jobs_u"
        tail = f"{quote(job_id, safe='')}/{quote(resume_id, safe='')}/{signature}"
        query = f"?approver={quote(approver, safe='')}" if approver else ""
        return {
            "approval_page": f"{where}/approval/{tail}{query}",
            "resume": f"{where}/resume/{tail}{query}",
            "cancel": f"{where}/cancel/{tail}{query}",
        }

    def check(self, workspace: str, job_id: str, resume_id: str, signature: str, approver: str = "") -> None:
        """Refuse a URL this server did not sign (or whose parts were changed)."""
        if not self.codec.signed(self._message(workspace, job_id, resume_id, approver), signature):
            raise Forbidden("the signature of this resume URL is not valid")

    async def status(self, workspace: str, job_id: str, resume_id: str, signature: str, approver: str = "") -> dict[str, Any]:
        """What an approval page shows: the run, and whether it waits for this approval."""
        self.check(workspace, job_id, resume_id, signature, approver)
        job = await self.jobs.get(workspace, job_id)
        waiting = job["status"] == "WAITING" and (job["waiting_for"] or {}).get("approval") == resume_id
        if waiting:
            message = f"job {job_id} waits for approval {resume_id}"
        elif job["status"] in FINAL:
            message = f"job {job_id} is {job['status']}: it waits for nothing"
        else:
            message = f"job {job_id} is {job['status']}; an answer now is kept until it waits for approval {resume_id}"
        return {"job_id": job_id, "resume_id": resume_id, "approver": approver or None, "status": job["status"],
                "waiting": waiting, "message": message}

    async def answer(
        self, actor: Actor, job_id: str, resume_id: str, signature: str, approver: str = "", approve: bool = True,
        payload: Any = None,
    ) -> dict[str, Any]:
        """Approve (store the answer, wake the run) or refuse (cancel the run). Conflict (409)
        when the run is final or the approval was answered already."""
        self.check(actor.workspace, job_id, resume_id, signature, approver)
        if not approve:
            job = await self.jobs.get(actor.workspace, job_id)
            if job["status"] in FINAL:
                raise Conflict(f"job {job_id} is {job['status']}: it waits for nothing", {"status": job["status"]})
            return await self.jobs.cancel(actor, job_id, f"approval {resume_id} refused by {approver or 'an approver'}")
        answer = {"approved": True, "approver": approver or None, "payload": payload}
        if not await self.jobs.signal(actor, job_id, "approval", resume_id, f"approval:{resume_id}", answer):
            raise Conflict(f"approval {resume_id} of job {job_id} was answered already", {"jobId": job_id})
        return await self.jobs.get(actor.workspace, job_id)
