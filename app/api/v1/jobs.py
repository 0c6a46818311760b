"""`/api/v1/jobs`: start runs (async, sync, streamed), read them, their results and logs, cancel,
pause and resume them.

The caller wrote a run's arguments: `$var:`/`$res:`/`$cred:` references in them resolve with
the caller's rights (`refs=True`), and one the caller may not read is a 400 before any run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.engine.executor import Outcome
from app.engine.queue import FINAL
from app.errors import Conflict, FlowmillError, NotFound
from app.api.bounds import INT32_MAX
from app.api.context import context, json_body
from app.api.documented import RUN_ARGS
from app.services import Services
from app.services.jobs import Trigger, outcome_of



class RunFailed(FlowmillError):
    """A run ended other than SUCCESS: not a fault of the server's, so a 422 whose code says how
    it ended (run_failed, run_timed_out, run_cancelled) and whose details carry the run's id,
    status and error (name, message, traceback)."""

    status = 422
    code = "run_failed"


_ENDED_CODE = {"FAILED": "run_failed", "TIMED_OUT": "run_timed_out", "CANCELLED": "run_cancelled"}


class JobCreated(msgspec.Struct, rename="camel"):
    """A run queued: its id as `jobId`, as every answer that starts a run names it (`id` kept
    for the clients written before)."""

    job_id: str
    id: str


class TriggerOut(msgspec.Struct):
    kind: str
    detail: str


class WaitingFor(msgspec.Struct, rename="camel", omit_defaults=True):
    until_ms: int | None = None
    children: Literal["all", "any"] | None = None
    approval: str | None = None
    event: str | None = None


class JobOut(msgspec.Struct, rename="camel"):
    id: str
    workspace: str
    kind: str
    path: str
    script_hash: str | None
    args: Any
    status: str
    result: Any
    error: Any
    trigger: TriggerOut
    request_id: str
    parent_job: str | None
    root_job: str | None
    created_by: str
    created_at: int
    scheduled_for: int
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None
    priority: int
    attempt: int
    progress: int | None
    # A WAITING run: when its timer wakes it (epoch ms), and what it waits for
    # ({untilMs?, children?: "all"|"any", approval?, event?}).
    wake_at: int | None = None
    waiting_for: WaitingFor | None = None
    # The trigger's event, for a script with a preprocessor (which made `args` from it); only in
    # GET /jobs/{id}, null in lists.
    event: Any = None


class JobPage(msgspec.Struct, rename="camel"):
    items: list[JobOut]
    next_cursor: str | None


class LogLine(msgspec.Struct):
    id: int
    ts: int
    stream: str
    line: str


class RunEvent(msgspec.Struct):
    """One server-sent event of a run's stream, for the OpenAPI document: `stream` and `log`
    carry a line as text; `result` (the result), `error` (`{status, error}`) and `end`
    (`{jobId, status}`) carry JSON."""

    event: Literal["stream", "log", "result", "error", "end"]
    data: str


RUN_EVENTS = {200: ResponseSpec(RunEvent, generate_examples=False, media_type="text/event-stream", description=(
    "Server-sent events: `stream` (a line of the run's result stream) and `log` (an output line) as they come, "
    "then `result` (the result, JSON) or `error` (`{status, error}`, JSON), then `end` (`{jobId, status}`, JSON)."))}


def job_out(job: dict[str, Any]) -> JobOut:
    waiting = job["waiting_for"]
    return JobOut(**{**job, "trigger": TriggerOut(**job["trigger"]),
                     "waiting_for": None if waiting is None else WaitingFor(**waiting)})


def result_response(job_id: str, outcome: Outcome, status: int | None = None) -> Response[Any]:
    """The result of a finished run (its JSON text as it is), or its error in the envelope."""
    if outcome.status != "SUCCESS":
        error = outcome.error or {}
        failed = RunFailed(
            f"the run ended {outcome.status}: {error.get('message', '')}",
            {"jobId": job_id, "status": outcome.status, "error": error}, {"x-job-id": job_id},
        )
        failed.code = _ENDED_CODE.get(outcome.status, "run_failed")
        raise failed
    return Response(msgspec.Raw((outcome.result or "null").encode()), headers={"x-job-id": job_id}, status_code=status)


def _trigger(request: Request) -> Trigger:
    """`api`, or `cli` when the command line says so (a label, not a permission)."""
    return Trigger("cli" if request.headers.get("x-flowmill-trigger") == "cli" else "api")


def _text(request: Request, args: Any) -> frozenset[str]:
    """The arguments given as text, to convert to main's types as a query's are: all of them
    with `X-Flowmill-Args: text` (what `flowmill run --arg k=v` sends), else none."""
    if request.headers.get("x-flowmill-args") == "text" and isinstance(args, dict):
        return frozenset(args)
    return frozenset()


@post("/jobs/run/p/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=201)
async def run_async(request: Request, path: str) -> JobCreated:
    """Queue a run of the script at `path` (or an execution of the flow there, its inputs the
    body); answered with its id once committed."""
    services, actor = context(request)
    args = await json_body(request)
    path = path.lstrip("/")
    try:
        job_id = await services.jobs.enqueue(actor, args, _trigger(request), path=path, refs=True,
                                             text=_text(request, args))
    except NotFound:
        if not await services.executions.is_flow(actor.workspace, path):
            raise
        job_id = (await services.executions.start(actor, path, args, _trigger(request),
                                                  text=_text(request, args))).execution_id
    return JobCreated(job_id, job_id)


@post("/jobs/run/h/{digest:str}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=201)
async def run_hash_async(request: Request, digest: str) -> JobCreated:
    """Queue a run of one script version."""
    services, actor = context(request)
    args = await json_body(request)
    job_id = await services.jobs.enqueue(actor, args, Trigger("api"), digest=digest, refs=True, text=_text(request, args))
    return JobCreated(job_id, job_id)


@post("/jobs/run_wait_result/p/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=200)
async def run_wait_result(request: Request, path: str) -> Response[Any]:
    """Run the script and answer with its result (the job id in `x-job-id`)."""
    services, actor = context(request)
    args = await json_body(request)
    return result_response(*await services.jobs.run_and_wait(actor, args, Trigger("api"), path=path.lstrip("/"), refs=True,
                                                             text=_text(request, args)))


@post("/jobs/run_and_stream/p/{path:path}", opt={"role": "executor", "audit": "job.run", "audit_success": False, "body": RUN_ARGS}, status_code=200, responses=RUN_EVENTS)
async def run_and_stream(request: Request, path: str) -> ServerSentEvent:
    """Run the script; stream its result stream (`stream` events) and output lines (`log`
    events) as they come, then a `result` (or `error`) event."""
    services, actor = context(request)
    args = await json_body(request)
    job_id = await services.jobs.enqueue(actor, args, Trigger("api"), path=path.lstrip("/"), refs=True,
                                         text=_text(request, args))
    return ServerSentEvent(run_events(services, actor.workspace, job_id), headers={"x-job-id": job_id})


async def follow(services: Services, workspace: str, job_id: str) -> AsyncIterator[dict[str, Any]]:
    """A run's log lines: past ones, then new ones as they are written, until the run is final;
    then the run itself (its view, with `status`), last.

    Lines are read from the database by id, so none is given twice or lost; the hub only
    says when new ones were written, so that they go out at once.
    """
    hub = services.jobs.executor.hub
    written = hub.subscribe(job_id)
    last = 0
    try:
        while True:
            job = await services.jobs.get(workspace, job_id)
            for line in await services.jobs.logs(workspace, job_id, after_id=last):
                last = line["id"]
                yield line
            if job["status"] in FINAL:
                break
            try:
                await asyncio.wait_for(written.get(), 1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        hub.unsubscribe(job_id, written)
    yield job


async def run_events(services: Services, workspace: str, job_id: str) -> AsyncIterator[ServerSentEventMessage]:
    """Past lines, then new ones as they are written, until the run is final; then its outcome."""
    async for item in follow(services, workspace, job_id):
        if "line" in item:
            yield ServerSentEventMessage(data=item["line"], event="stream" if item["stream"] == "result" else "log")
        else:
            job = item
    # Every stream ends the same way: the outcome (`result`, or `error` with the status), then
    # `end` with the run's id and final status.
    if job["status"] == "SUCCESS":
        yield ServerSentEventMessage(data=msgspec.json.encode(job["result"]).decode(), event="result")
    else:
        payload = {"status": job["status"], "error": job["error"]}
        yield ServerSentEventMessage(data=msgspec.json.encode(payload).decode(), event="error")
    yield ServerSentEventMessage(data=msgspec.json.encode({"jobId": job_id, "status": job["status"]}).decode(), event="end")


@get("/jobs", opt={"role": "viewer"})
async def list_jobs(
    request: Request,
    status: str | None = None,
    path: str | None = None,
    trigger: str | None = None,
    kind: str | None = Parameter(default=None, description="script, flow, workflow or task"),
    cursor: str | None = None,
    limit: int = Parameter(default=50, ge=1, le=200),
) -> JobPage:
    """Runs of the workspace, newest first."""
    services, actor = context(request)
    items, next_cursor = await services.jobs.list(actor.workspace, status, path, trigger, cursor, limit, kind=kind)
    return JobPage([job_out(j) for j in items], next_cursor)


@get("/jobs/{job_id:str}", opt={"role": "viewer"})
async def get_job(request: Request, job_id: str) -> JobOut:
    services, actor = context(request)
    return job_out(await services.jobs.get(actor.workspace, job_id))


@get("/jobs/{job_id:str}/result", opt={"role": "viewer", "errors": (409, 422)})
async def get_result(request: Request, job_id: str) -> Response[Any]:
    """The result of a finished run; 409 while it is not finished."""
    services, actor = context(request)
    job = await services.jobs.get(actor.workspace, job_id)
    if job["status"] not in FINAL:
        raise Conflict(f"the run is {job['status']}; it has no result yet", {"status": job["status"]})
    return result_response(job_id, outcome_of(job))


@get("/jobs/{job_id:str}/logs", opt={"role": "viewer"})
async def get_logs(
    request: Request,
    job_id: str, after: int = Parameter(default=0, ge=0, le=INT32_MAX), limit: int = Parameter(default=10_000, ge=1, le=10_000)
) -> list[LogLine]:
    """Log lines with their timestamps (ms), from after line id `after`."""
    services, actor = context(request)
    return [LogLine(**line) for line in await services.jobs.logs(actor.workspace, job_id, after, limit)]


@get("/jobs/{job_id:str}/logs/stream", opt={"role": "viewer"}, responses=RUN_EVENTS)
async def stream_logs(request: Request, job_id: str) -> ServerSentEvent:
    """Past lines, then live ones while the run is in flight (text/event-stream)."""
    services, actor = context(request)
    await services.jobs.get(actor.workspace, job_id)
    return ServerSentEvent(run_events(services, actor.workspace, job_id))


@post("/jobs/{job_id:str}/cancel", opt={"role": "executor", "audit": "job.cancel"}, status_code=200)
async def cancel_job(request: Request, job_id: str) -> JobOut:
    """Cancel a queued, waiting or paused run, or kill a running one; its descendants with it."""
    services, actor = context(request)
    return job_out(await services.jobs.cancel(actor, job_id))


@post("/jobs/{job_id:str}/pause", opt={"role": "executor", "audit": "job.pause", "errors": (409,)}, status_code=200)
async def pause_job(request: Request, job_id: str) -> JobOut:
    """Pause a run: at once when it is queued or waiting, at its next step when it runs (409
    for a run that is final or paused already)."""
    services, actor = context(request)
    return job_out(await services.jobs.pause(actor, job_id))


@post("/jobs/{job_id:str}/resume", opt={"role": "executor", "audit": "job.resume", "errors": (409,)}, status_code=200)
async def resume_job(request: Request, job_id: str) -> JobOut:
    """Wake a WAITING or PAUSED run now, to run its next turn; any other run is left as it is."""
    services, actor = context(request)
    return job_out(await services.jobs.resume(actor, job_id))


class EventIn(msgspec.Struct):
    type: str
    payload: Any = None


class EventSent(msgspec.Struct):
    """The event stored for the run: `number` among the events of its type sent to it."""

    type: str
    number: int


@post("/jobs/{job_id:str}/events", opt={"role": "executor", "audit": "job.event", "errors": (409,)}, status_code=201)
async def send_event(request: Request, job_id: str, data: EventIn) -> EventSent:
    """Send a run an event: stored with its steps (buffered until the run waits for its type),
    and the run woken if it waits for that type now (`flowmill.wait_for_event`)."""
    services, actor = context(request)
    return EventSent(data.type, await services.jobs.send_event(actor, job_id, data.type, data.payload))


HANDLERS = [run_async, run_hash_async, run_wait_result, run_and_stream, list_jobs, get_job, get_result, get_logs,
            stream_logs, cancel_job, pause_job, resume_job, send_event]
