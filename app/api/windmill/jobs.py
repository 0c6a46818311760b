"""Windmill's job routes: start runs by path or hash, follow them, read results, cancel,
progress. What `wmill.run_script_by_path[_async]`, `run_script_by_hash[_async]`,
`wait_job`, `get_job`, `get_job_status`, `get_result`, `cancel_job`, `get_root_job_id`,
`set_progress` / `get_progress` and `run_flow_async` call; and Windmill's `run_wait_result`
routes, which answer a run with its result (422 and the error when it failed).

The client's synchronous runs are an asynchronous run plus polling of
`get_result_maybe`, which ends on every final status (success, failure, cancel, timeout).
The caller wrote the arguments: their references resolve with the caller's rights (a run's
token: the run's identity), and one the caller may not read is a 400 before any run.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from app.api.bounds import Percent, seconds_from_now
from app.api.context import context, json_body, json_string
from app.api.documented import CANCEL_REASON, RUN_ARGS
from app.api.v1.jobs import FINAL, result_response
from app.errors import BadRequest, Conflict, NotFound
from app.services import Services
from app.services.actor import Actor, now_ms
from app.services.jobs import Trigger

TRIGGER = Trigger("api", "windmill")


class WindmillJob(msgspec.Struct):
    """A run in the shape of Windmill's QueuedJob / CompletedJob (snake_case, as Windmill)."""

    id: str
    type: str  # "QueuedJob" | "CompletedJob"
    workspace_id: str
    running: bool
    success: bool
    canceled: bool
    canceled_by: str | None
    canceled_reason: str | None
    result: Any
    args: Any
    script_path: str
    script_hash: str | None
    job_kind: str
    language: str
    tag: str
    created_by: str
    permissioned_as: str
    email: str
    created_at: str
    scheduled_for: str
    started_at: str | None
    completed_at: str | None
    duration_ms: int | None
    parent_job: str | None
    root_job: str | None
    is_flow_step: bool
    is_skipped: bool
    visible_to_owner: bool
    deleted: bool
    priority: int
    flow_status: None
    progress: int | None


class ResultMaybe(msgspec.Struct):
    completed: bool
    started: bool
    success: bool
    result: Any


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as Windmill writes times: RFC 3339, UTC, milliseconds, `Z`."""
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def windmill_result(job: dict[str, Any]) -> Any:
    """The result as Windmill keeps it: the value of a success, `{"error": {...}}` otherwise
    (with Windmill's `stack` beside Flowmill's `traceback`), None while not final."""
    if job["status"] == "SUCCESS":
        return job["result"]
    if job["status"] not in FINAL:
        return None
    return windmill_error(job["status"], job["error"])


def windmill_error(status: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """How Windmill keeps a failed run's result: `{"error": {...}}`, with its `stack`."""
    error = dict(error or {"name": status, "message": f"the run ended {status}"})
    if "traceback" in error and "stack" not in error:
        error["stack"] = error["traceback"]
    return {"error": error}


def windmill_job(job: dict[str, Any]) -> WindmillJob:
    """A Flowmill job view as Windmill's job object."""
    done, cancelled = job["status"] in FINAL, job["status"] == "CANCELLED"
    return WindmillJob(
        id=job["id"], type="CompletedJob" if done else "QueuedJob", workspace_id=job["workspace"],
        running=job["status"] == "RUNNING", success=job["status"] == "SUCCESS", canceled=cancelled,
        canceled_by=None, canceled_reason=(job["error"] or {}).get("message") if cancelled else None,
        result=windmill_result(job), args=job["args"], script_path=job["path"], script_hash=job["script_hash"],
        job_kind="script", language="python3", tag="python3", created_by=job["created_by"],
        permissioned_as=f"u/{job['created_by']}", email=f"{job['created_by']}@flowmill.local",
        created_at=iso(job["created_at"]) or "", scheduled_for=iso(job["scheduled_for"]) or "",
        started_at=iso(job["started_at"]), completed_at=iso(job["finished_at"]), duration_ms=job["duration_ms"],
        parent_job=job["parent_job"], root_job=job["root_job"], is_flow_step=False, is_skipped=False,
        visible_to_owner=True, deleted=False, priority=job["priority"], flow_status=None, progress=job["progress"],
    )


def _scheduled_for(text: str | None) -> int | None:
    seconds = seconds_from_now(text, "scheduled_in_secs")
    return None if seconds is None else now_ms() + int(seconds * 1000)


async def _enqueue(request: Request, path: str | None = None, digest: str | None = None) -> Response[str]:
    """Queue a run as `wmill` asks for it; the job id as text (201)."""
    services, actor = context(request)
    params = request.query_params
    if params.get("retry"):
        # Said plainly: a retry policy asked for and silently dropped would be a lie.
        raise BadRequest("a retry policy per run is not available in Flowmill; set `retry` in the script's settings")
    parent, root = params.get("parent_job"), params.get("root_job")
    for lineage in (parent, root):
        if lineage is not None:
            await services.jobs.get(actor.workspace, lineage)  # only runs of this workspace
    job_id = await services.jobs.enqueue(
        actor, await json_body(request), TRIGGER, path=path, digest=digest, parent=parent, root=root,
        scheduled_for=_scheduled_for(params.get("scheduled_in_secs")), refs=True,
    )
    return Response(job_id, media_type=MediaType.TEXT, status_code=201)


@post("/jobs/run/p/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=201)
async def run_by_path(request: Request, path: str) -> Response[str]:
    """Queue a run of the latest version at `path`; answered with the job id, as text."""
    return await _enqueue(request, path=path.lstrip("/"))


@post("/jobs/run/h/{digest:str}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=201)
async def run_by_hash(request: Request, digest: str) -> Response[str]:
    """Queue a run of one script version; answered with the job id, as text."""
    return await _enqueue(request, digest=digest)


class WindmillError(msgspec.Struct):
    """A failed run's error as Windmill shows it."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    message: str | msgspec.UnsetType = msgspec.UNSET
    stack: str | msgspec.UnsetType = msgspec.UNSET
    traceback: str | msgspec.UnsetType = msgspec.UNSET


class WindmillRunFailed(msgspec.Struct):
    error: WindmillError


RUN_FAILED = {422: ResponseSpec(WindmillRunFailed, generate_examples=False, description=(
    "The run ended FAILED, TIMED_OUT or CANCELLED: Windmill's `{\"error\": {name, message, stack}}`."))}


async def _run_and_wait(request: Request, path: str | None = None, digest: str | None = None) -> Response[Any]:
    """Run now and answer as Windmill does: 200 with the result, or 422 with `{"error": ...}`."""
    services, actor = context(request)
    job_id, outcome = await services.jobs.run_and_wait(
        actor, await json_body(request), TRIGGER, path=path, digest=digest, refs=True
    )
    if outcome.status == "SUCCESS":
        return result_response(job_id, outcome)
    return Response(windmill_error(outcome.status, outcome.error), headers={"x-job-id": job_id}, status_code=422)


@post("/jobs/run_wait_result/p/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=200, responses=RUN_FAILED)
async def run_wait_by_path(request: Request, path: str) -> Response[Any]:
    """Run the latest version at `path` and answer with its result."""
    return await _run_and_wait(request, path=path.lstrip("/"))


@post("/jobs/run_wait_result/h/{digest:str}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=200, responses=RUN_FAILED)
async def run_wait_by_hash(request: Request, digest: str) -> Response[Any]:
    """Run one script version and answer with its result."""
    return await _run_and_wait(request, digest=digest)


@post("/jobs/run/f/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS},
      status_code=201)
async def run_flow(request: Request, path: str) -> Response[str]:
    """Queue an execution of the flow at `f/<namespace>/<name>` with the body as its inputs
    (`wmill.run_flow_async`); answered with its id, as text."""
    services, actor = context(request)
    started = await services.executions.start(actor, path.lstrip("/"), await json_body(request), TRIGGER)
    return Response(started.execution_id, media_type=MediaType.TEXT, status_code=201)


async def _job(request: Request, job_id: str) -> tuple[Services, Actor, dict[str, Any]]:
    services, actor = context(request)
    return services, actor, await services.jobs.get(actor.workspace, job_id)


@get("/jobs_u/completed/get_result_maybe/{job_id:str}", opt={"role": "viewer"})
async def get_result_maybe(request: Request, job_id: str) -> ResultMaybe:
    """Whether the run is final, started, successful, and its result once final (what
    `wait_job` polls)."""
    _, _, job = await _job(request, job_id)
    return ResultMaybe(
        completed=job["status"] in FINAL, started=job["started_at"] is not None,
        success=job["status"] == "SUCCESS", result=windmill_result(job),
    )


@get("/jobs_u/completed/get_result/{job_id:str}", opt={"role": "viewer"})
async def get_result(request: Request, job_id: str) -> Any:
    """The result of a final run (`{"error": ...}` for one that failed); 404 before."""
    _, _, job = await _job(request, job_id)
    if job["status"] not in FINAL:
        raise NotFound(f"job {job_id} is not completed (it is {job['status']})")
    return windmill_result(job)


@get("/jobs_u/get/{job_id:str}", opt={"role": "viewer"})
async def get_job(request: Request, job_id: str) -> WindmillJob:
    """The run as Windmill's QueuedJob (not final) or CompletedJob."""
    _, _, job = await _job(request, job_id)
    return windmill_job(job)


@get("/jobs_u/get_root_job_id/{job_id:str}", opt={"role": "viewer"})
async def get_root_job_id(request: Request, job_id: str) -> Response[bytes]:
    """The id of the run at the top of this run's lineage (itself at the top), as JSON."""
    _, _, job = await _job(request, job_id)
    return json_string(job["root_job"] or job["parent_job"] or job["id"])


@post("/jobs_u/queue/cancel/{job_id:str}", opt={"role": "executor", "audit": "job.cancel", "body": CANCEL_REASON}, status_code=200)
async def cancel(request: Request, job_id: str) -> Response[str]:
    """Cancel a queued run or kill a running one, with the caller's reason; 409 when the run
    was already final."""
    services, actor = context(request)
    body = await json_body(request)
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("the body is {\"reason\": \"...\"}")
    before = await services.jobs.get(actor.workspace, job_id)
    if before["status"] in FINAL:
        raise Conflict(f"job {job_id} is already completed ({before['status']})", {"status": before["status"]})
    job = await services.jobs.cancel(actor, job_id, reason or "")
    if job["status"] == "RUNNING":
        # Jobs.cancel misses a run claimed between its read and its write (it then neither
        # cancels the queued run nor signals the running one); asking again reaches it, and
        # is harmless otherwise. Drop once Jobs.cancel handles that race itself.
        await services.jobs.cancel(actor, job_id, reason or "")
    return Response(f"job canceled: {job_id}", media_type=MediaType.TEXT)


@get("/jobs/list", opt={"role": "viewer"})
async def list_jobs(
    request: Request,
    running: bool | None = None,
    script_path_exact: str | None = None,
    per_page: int = Parameter(default=100, ge=1, le=200),
) -> list[WindmillJob]:
    """Runs of the workspace, newest first (`running=true`: only running ones)."""
    services, actor = context(request)
    items, _ = await services.jobs.list(
        actor.workspace, status="RUNNING" if running else None, path=script_path_exact, limit=per_page
    )
    return [windmill_job(job) for job in items]


class ProgressIn(msgspec.Struct):
    percent: Percent
    flow_job_id: str | None = None  # sent by `wmill`; a run's progress is its own here


@post("/job_metrics/set_progress/{job_id:str}", opt={"role": "executor", "audit": "job.progress"}, status_code=200)
async def set_progress(request: Request, job_id: str, data: ProgressIn) -> None:
    """Record the run's progress (a percentage)."""
    services, actor = context(request)
    await services.jobs.set_progress(actor.workspace, job_id, data.percent)


@get("/job_metrics/get_progress/{job_id:str}", opt={"role": "viewer"})
async def get_progress(request: Request, job_id: str) -> int | None:
    """The run's progress, null when none was set."""
    _, _, job = await _job(request, job_id)
    return job["progress"]


HANDLERS = [
    run_by_path, run_by_hash, run_wait_by_path, run_wait_by_hash, run_flow, get_result_maybe, get_result, get_job,
    get_root_job_id, cancel, list_jobs, set_progress, get_progress,
]
