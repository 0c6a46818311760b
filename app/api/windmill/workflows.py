"""Windmill's workflow-as-code route that `wmill` calls from inside a workflow's run: the fast
path of `wmill.step`, which posts each step's result rather than ending the turn.

`POST /jobs/wac/inline_checkpoint/{job_id}` `{key, result, started_at, duration_ms}` stores
the step `key` of run `job_id` before the workflow goes on. Only that run's own token may
(403 otherwise); a step is recorded by its run (only refusals are audited). A step that failed (`result` is wmill's `__wmill_error` marker) is stored as
Flowmill stores failures, and that record is echoed back (`{"failure": ...}`): what wmill raises
from, so that this turn and every replay see the same error. A result over the step size limit
is a 413, and wmill then takes its slower path, which fails the run naming the step; so is a
409 when the run is asked to pause (the step is stored; the slower path ends the turn PAUSED).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post

from app.api.bounds import check_depth
from app.api.context import context
from app.api.documented import INLINE_CHECKPOINT
from app.errors import BadRequest


class InlineCheckpointIn(msgspec.Struct):
    """A step's result as wmill posts it (Windmill's names)."""

    key: str
    result: Any = None
    started_at: str | None = None
    duration_ms: int | None = None


class InlineCheckpointOut(msgspec.Struct, omit_defaults=True):
    """`failure`: the record stored for a step that failed (absent for one that succeeded)."""

    stored: bool = True
    failure: dict[str, Any] | None = None


@post("/jobs/wac/inline_checkpoint/{job_id:str}", opt={"role": "viewer", "audit": "job.step", "audit_success": False, "errors": (403, 409, 413),
           "body": INLINE_CHECKPOINT},
      status_code=200)
async def inline_checkpoint(request: Request, job_id: str) -> InlineCheckpointOut:
    """Store step `key` of workflow run `job_id` (its own token only)."""
    services, actor = context(request)
    body = await request.body()
    check_depth(body)
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as error:  # ValidationError too
        raise BadRequest(f"the body is not a step: {error}") from None
    failure = await services.jobs.workflows.inline_step(actor, job_id, data.key, data.result)
    return InlineCheckpointOut(failure=failure)


# Decoded here rather than by the framework (a typed `data`): one of these comes per step of a
# workflow, and the framework's parsing costs as much as the rest of the request.
_decoder = msgspec.json.Decoder(InlineCheckpointIn)


HANDLERS = [inline_checkpoint]
