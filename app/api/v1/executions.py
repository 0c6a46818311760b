"""`/api/v1/flows/{id}/execute` and `/api/v1/executions`: start flow executions, read them and
their tasks, follow their logs (WebSocket or server-sent events), cancel, retry and replay."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, WebSocket, get, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from app.api.context import context, json_body
from app.api.documented import EXECUTE_IN
from app.api.v1.jobs import RUN_EVENTS, follow, run_events
from app.errors import FlowmillError
from app.flows.records import TaskRecord
from app.server.access import authorize
from app.services.executions import Started
from app.services.jobs import Trigger



class ExecuteOut(msgspec.Struct, rename="camel"):
    execution_id: str
    job_id: str  # the same id: a run's id is jobId everywhere
    status: str
    tasks_total: int


class ExecutionOut(msgspec.Struct, rename="camel"):
    id: str
    flow_id: str | None
    path: str
    namespace: str | None
    flow_name: str | None
    revision: int | None
    status: str
    tasks_total: int
    tasks_executed: int
    inputs: dict[str, Any]
    outputs: Any
    error: dict[str, Any] | None
    trigger: dict[str, str]
    parent_id: str | None
    created_by: str
    created_at: int
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None
    waiting_for: dict[str, Any] | None
    wake_at: int | None


class TaskOut(msgspec.Struct, rename="camel"):
    task_name: str
    task_type: str
    key: str
    status: str
    outputs: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None


class ExecutionDetail(msgspec.Struct):
    execution: ExecutionOut
    tasks: list[TaskOut]


class ExecutionPage(msgspec.Struct, rename="camel"):
    items: list[ExecutionOut]
    next_cursor: str | None


class ReplayIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    from_task: str


def _task(record: TaskRecord) -> TaskOut:
    duration = record.finished_at - record.started_at if record.finished_at and record.started_at else None
    return TaskOut(record.task, record.type, record.key, record.status, record.outputs, record.error, record.attempts,
                   record.started_at, record.finished_at, duration)


def detail(view: dict[str, Any]) -> ExecutionDetail:
    return ExecutionDetail(ExecutionOut(**view["execution"]),
                           [_task(record) for record in view["tasks"]])


def _summary(item: dict[str, Any]) -> ExecutionOut:
    return ExecutionOut(**item)


def _started(started: Started) -> ExecuteOut:
    return ExecuteOut(started.execution_id, started.execution_id, started.status, started.tasks_total)


@post("/flows/{flow_id:str}/execute", opt={"role": "executor", "audit": "flow.execute", "audit_success": False,
                                           "body": EXECUTE_IN}, status_code=201)
async def execute(request: Request, flow_id: str) -> ExecuteOut:
    """Queue an execution with `{inputs}` (checked first: 400 naming each bad input, and no
    execution); answered once it is committed."""
    services, actor = context(request)
    body = await json_body(request)
    inputs = body.get("inputs", {}) if isinstance(body, dict) else body
    flow = await services.flows.get(actor.workspace, flow_id)
    return _started(await services.executions.start(actor, flow.path, inputs, Trigger("api")))


@get("/executions", opt={"role": "viewer"})
async def list_executions(
    request: Request,
    flow_id: str | None = Parameter(query="flowId", default=None),
    namespace: str | None = None,
    status: str | None = None,
    since: int | None = Parameter(default=None, ge=0, le=2**53, description="created at or after (epoch ms)"),
    labels: list[str] | None = Parameter(default=None, description="key=value, repeated: flows with all of them"),
    cursor: str | None = None,
    limit: int = Parameter(default=50, ge=1, le=200),
) -> ExecutionPage:
    """Executions newest first."""
    services, actor = context(request)
    items, next_cursor = await services.executions.list(actor.workspace, flow_id, namespace, status, since, labels,
                                                        cursor, limit)
    return ExecutionPage([_summary(item) for item in items], next_cursor)


@get("/executions/{execution_id:str}", opt={"role": "viewer"})
async def get_execution(request: Request, execution_id: str) -> ExecutionDetail:
    services, actor = context(request)
    return detail(await services.executions.get(actor.workspace, execution_id))


@get("/executions/{execution_id:str}/logs/stream", opt={"role": "viewer"}, responses=RUN_EVENTS)
async def stream_execution_logs(request: Request, execution_id: str) -> ServerSentEvent:
    """Past lines, then live ones until the execution is final, then its outcome (text/event-stream)."""
    services, actor = context(request)
    await services.executions.get(actor.workspace, execution_id)
    return ServerSentEvent(run_events(services, actor.workspace, execution_id))


@websocket("/executions/{execution_id:str}/logs", opt={"role": "viewer"})
async def execution_logs(socket: WebSocket, execution_id: str) -> None:
    """Past lines, then live ones, each a JSON message `{id, ts, stream, line}`; then
    `{event: "end", status, outputs, error}` and the socket is closed. A token goes in the
    `Authorization: Bearer` header (never in the URL)."""
    await socket.accept()  # first, so that a refusal reaches the client as a close code (4401, 4403, 4404)
    try:
        actor = await authorize(socket.scope, socket.route_handler, "ws")  # type: ignore[arg-type]
        services = socket.app.state.services
        await services.executions.get(actor.workspace, execution_id)
    except FlowmillError as error:
        await socket.close(code=4000 + error.status, reason=error.message[:120])
        return
    try:
        async for item in follow(services, actor.workspace, execution_id):
            if "line" in item:
                await socket.send_json(item)
            else:
                await socket.send_json({"event": "end", "status": item["status"], "outputs": item["result"],
                                        "error": item["error"]})
        await socket.close()
    except WebSocketDisconnect:
        pass


@post("/executions/{execution_id:str}/cancel", opt={"role": "executor", "audit": "execution.cancel"}, status_code=200)
async def cancel_execution(request: Request, execution_id: str) -> ExecutionDetail:
    """Cancel a queued or waiting execution, or stop a running one (its running tasks with it)."""
    services, actor = context(request)
    return detail(await services.executions.cancel(actor, execution_id))


@post("/executions/{execution_id:str}/retry", opt={"role": "executor", "audit": "execution.retry", "errors": (409,)},
      status_code=200)
async def retry_execution(request: Request, execution_id: str) -> ExecutionDetail:
    """Run a FAILED, TIMED_OUT or CANCELLED execution again under its id, from its failed task:
    the tasks that succeeded keep their outputs (409 for an execution in another status)."""
    services, actor = context(request)
    return detail(await services.executions.retry(actor, execution_id))


@post("/executions/{execution_id:str}/replay", opt={"role": "executor", "audit": "execution.replay"}, status_code=201)
async def replay_execution(request: Request, execution_id: str, data: ReplayIn) -> ExecuteOut:
    """A new execution of the same flow version and inputs that reuses the outputs of the tasks
    before `fromTask` and runs it and the rest."""
    services, actor = context(request)
    return _started(await services.executions.replay(actor, execution_id, data.from_task))


HANDLERS = [execute, list_executions, get_execution, stream_execution_logs, execution_logs, cancel_execution,
            retry_execution, replay_execution]
