"""Signed URLs to resume or cancel a run that waits for an approval (Windmill's resume URLs).

`wmill.get_resume_urls()` asks for them; the URLs are real Flowmill endpoints and their
signatures are checked. No Flowmill script can suspend yet, so a run never waits for an
approval: resuming or cancelling through these URLs answers 409 and says why, rather than
pretending to resume something.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import quote

import msgspec

from app.errors import Conflict, Forbidden
from app.security.tokens import JwtCodec
from app.services.actor import Actor
from app.services.jobs import Jobs

NOT_SUSPENDABLE = "Flowmill scripts cannot suspend for an approval yet"


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
        """What an approval page shows: the run, and whether it waits for an approval."""
        self.check(workspace, job_id, resume_id, signature, approver)
        job = await self.jobs.get(workspace, job_id)
        return {
            "job_id": job_id, "resume_id": resume_id, "approver": approver or None, "status": job["status"],
            "waiting": False, "message": f"job {job_id} is not waiting for an approval: {NOT_SUSPENDABLE}",
        }

    async def answer(
        self, workspace: str, job_id: str, resume_id: str, signature: str, approver: str = "", approve: bool = True
    ) -> NoReturn:
        """Resume (`approve`) or cancel a waiting run. No run ever waits yet: always a 409 once
        the URL is found genuine and the run exists."""
        self.check(workspace, job_id, resume_id, signature, approver)
        job = await self.jobs.get(workspace, job_id)
        action = "resumed" if approve else "cancelled through its approval"
        raise Conflict(
            f"this job is not waiting: job {job_id} is {job['status']} and cannot be {action} ({NOT_SUSPENDABLE})",
            {"jobId": job_id, "status": job["status"]},
        )
