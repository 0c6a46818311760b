"""The part of Windmill's API that the official `wmill` Python client calls, with Windmill's
paths, field names and answers, so that `wmill` works unchanged against Flowmill: inside a
script (with the WM_* environment of the run) and from any machine.

Served at `/api/w/{workspace}/...`, plus `/api/version`, `/api/users/whoami` and
`/api/users/tokens/create`. Handlers are thin: the work is the native services'.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, post

import app as flowmill
from app.api.context import context, json_body, json_string
from app.api.v1.jobs import FINAL
from app.errors import BadRequest, Forbidden, NotFound
from app.services.actor import at_least
from app.services.jobs import Trigger

TEXT = MediaType.TEXT
FLOW_STATE_NAMESPACE = "flow_user_state"


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def windmill_job(job: dict[str, Any]) -> dict[str, Any]:
    """A Flowmill job in the shape of Windmill's QueuedJob / CompletedJob."""
    done = job["status"] in FINAL
    result = job["result"] if job["status"] == "SUCCESS" else ({"error": job["error"]} if done else None)
    return {
        "id": job["id"], "type": "CompletedJob" if done else "QueuedJob", "workspace_id": job["workspace"],
        "running": job["status"] == "RUNNING", "success": job["status"] == "SUCCESS",
        "canceled": job["status"] == "CANCELLED", "canceled_reason": (job["error"] or {}).get("message")
        if job["status"] == "CANCELLED" else None,
        "result": result, "args": job["args"], "script_path": job["path"], "script_hash": job["script_hash"],
        "job_kind": "script", "language": "python3", "created_by": job["created_by"],
        "permissioned_as": f"u/{job['created_by']}", "created_at": _iso(job["created_at"]),
        "started_at": _iso(job["started_at"]), "completed_at": _iso(job["finished_at"]),
        "duration_ms": job["duration_ms"], "parent_job": job["parent_job"], "root_job": job["root_job"],
        "is_flow_step": False, "scheduled_for": _iso(job["scheduled_for"]), "priority": job["priority"],
        "flow_status": None, "progress": job["progress"],
    }


def _scheduled(request: Request) -> int | None:
    seconds = request.query_params.get("scheduled_in_secs")
    if seconds is None:
        return None
    from app.engine.executor import now_ms

    try:
        return now_ms() + int(float(seconds) * 1000)
    except ValueError:
        raise BadRequest("scheduled_in_secs is a number of seconds") from None


# -- jobs --------------------------------------------------------------------------------------


@post("/jobs/run/p/{path:path}", opt={"role": "executor"}, status_code=201)
async def run_by_path(request: Request, path: str) -> Response[str]:
    """Queue a run; the job id, as text."""
    services, actor = context(request)
    job_id = await services.jobs.enqueue(
        actor, await json_body(request), Trigger("api", "windmill"), path=path.lstrip("/"),
        parent=request.query_params.get("parent_job"), root=request.query_params.get("root_job"),
        scheduled_for=_scheduled(request),
    )
    return Response(job_id, media_type=TEXT, status_code=201)


@post("/jobs/run/h/{digest:str}", opt={"role": "executor"}, status_code=201)
async def run_by_hash(request: Request, digest: str) -> Response[str]:
    services, actor = context(request)
    job_id = await services.jobs.enqueue(
        actor, await json_body(request), Trigger("api", "windmill"), digest=digest,
        parent=request.query_params.get("parent_job"), root=request.query_params.get("root_job"),
        scheduled_for=_scheduled(request),
    )
    return Response(job_id, media_type=TEXT, status_code=201)


@post("/jobs/run/f/{path:path}", opt={"role": "executor"})
async def run_flow(request: Request, path: str) -> None:
    """Flows are not part of Flowmill yet: said plainly rather than faked."""
    raise NotFound(f"no flow at {path.lstrip('/')}: flows are not available in Flowmill yet")


@get("/jobs_u/completed/get_result_maybe/{job_id:str}", opt={"role": "viewer"})
async def get_result_maybe(request: Request, job_id: str) -> dict[str, Any]:
    services, actor = context(request)
    job = windmill_job(await services.jobs.get(actor.workspace, job_id))
    completed = job["type"] == "CompletedJob"
    return {"completed": completed, "started": job["started_at"] is not None, "success": job["success"],
            "result": job["result"] if completed else None}


@get("/jobs_u/completed/get_result/{job_id:str}", opt={"role": "viewer"})
async def get_result(request: Request, job_id: str) -> Any:
    services, actor = context(request)
    job = await services.jobs.get(actor.workspace, job_id)
    if job["status"] not in FINAL:
        raise NotFound(f"job {job_id} is not completed")
    return windmill_job(job)["result"]


@get("/jobs_u/get/{job_id:str}", opt={"role": "viewer"})
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    services, actor = context(request)
    return windmill_job(await services.jobs.get(actor.workspace, job_id))


@get("/jobs_u/get_root_job_id/{job_id:str}", opt={"role": "viewer"})
async def get_root_job_id(request: Request, job_id: str) -> Response[bytes]:
    services, actor = context(request)
    job = await services.jobs.get(actor.workspace, job_id)
    return json_string(job["root_job"] or job["parent_job"] or job["id"])


@post("/jobs_u/queue/cancel/{job_id:str}", opt={"role": "executor", "audit": "job.cancel"}, status_code=200)
async def cancel(request: Request, job_id: str) -> Response[str]:
    services, actor = context(request)
    body = await json_body(request)
    reason = body.get("reason") if isinstance(body, dict) else None
    await services.jobs.cancel(actor, job_id, reason or "")
    return Response(f"job canceled: {job_id}", media_type=TEXT)


@get("/jobs/list", opt={"role": "viewer"})
async def list_jobs(request: Request) -> list[dict[str, Any]]:
    services, actor = context(request)
    params = request.query_params
    status = "RUNNING" if params.get("running") == "true" else None
    per_page = min(int(params.get("per_page", "100")), 200)
    items, _ = await services.jobs.list(actor.workspace, status=status, path=params.get("script_path_exact"), limit=per_page)
    return [windmill_job(j) for j in items]


@post("/job_metrics/set_progress/{job_id:str}", opt={"role": "executor"}, status_code=200)
async def set_progress(request: Request, job_id: str) -> None:
    services, actor = context(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("percent"), int):
        raise BadRequest("the body is {\"percent\": 0-100}")
    await services.jobs.set_progress(actor.workspace, job_id, body["percent"])


@get("/job_metrics/get_progress/{job_id:str}", opt={"role": "viewer"})
async def get_progress(request: Request, job_id: str) -> int | None:
    services, actor = context(request)
    return (await services.jobs.get(actor.workspace, job_id))["progress"]


# -- flow user state and resume urls ------------------------------------------------------------------


@post("/jobs/flow/user_states/{flow_id:str}/{key:str}", opt={"role": "executor"}, status_code=200)
async def set_flow_user_state(request: Request, flow_id: str, key: str) -> None:
    """Kept in the KV store, under the root job's id."""
    services, actor = context(request)
    await services.jobs.get(actor.workspace, flow_id)
    await services.kv.put(actor, FLOW_STATE_NAMESPACE, f"{flow_id}.{key}", services.kv.encode(await request.body() or b"null"))


@get("/jobs/flow/user_states/{flow_id:str}/{key:str}", opt={"role": "viewer"})
async def get_flow_user_state(request: Request, flow_id: str, key: str) -> Any:
    services, actor = context(request)
    try:
        value, _ = await services.kv.get(actor.workspace, FLOW_STATE_NAMESPACE, f"{flow_id}.{key}")
    except NotFound:
        return None
    return msgspec.Raw(value.encode())


@get("/jobs/resume_urls/{job_id:str}/{resume_id:str}", opt={"role": "viewer"})
async def resume_urls(request: Request, job_id: str, resume_id: str, approver: str = "") -> dict[str, str]:
    """Signed URLs to resume or cancel a run that waits for an approval."""
    services, actor = context(request)
    await services.jobs.get(actor.workspace, job_id)
    signature = services.accounts.jwt.sign(f"resume:{actor.workspace}:{job_id}:{resume_id}:{approver}")
    base = f"{services.settings.base_url}/api/w/{actor.workspace}/jobs_u"
    query = f"?approver={approver}" if approver else ""
    return {
        "approvalPage": f"{services.settings.base_url}/approve/{actor.workspace}/{job_id}/{resume_id}/{signature}{query}",
        "resume": f"{base}/resume/{job_id}/{resume_id}/{signature}{query}",
        "cancel": f"{base}/cancel/{job_id}/{resume_id}/{signature}{query}",
    }


# -- variables and resources ------------------------------------------------------------------------


@get("/variables/get_value/{path:path}", opt={"role": "viewer"})
async def variable_value(request: Request, path: str) -> Response[bytes]:
    services, actor = context(request)
    return json_string(await services.variables.value(actor, path.lstrip("/")))


@get("/variables/get/{path:path}", opt={"role": "viewer"})
async def variable(request: Request, path: str) -> dict[str, Any]:
    services, actor = context(request)
    found = await services.variables.get(actor.workspace, path.lstrip("/"))
    return {"path": found["path"], "value": found["value"], "is_secret": found["is_secret"],
            "description": found["description"], "workspace_id": actor.workspace}


@post("/variables/create", opt={"role": "editor", "audit": "variable.create"}, status_code=201)
async def create_variable(request: Request) -> Response[str]:
    services, actor = context(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not isinstance(body.get("value"), str):
        raise BadRequest("the body is {path, value, is_secret?, description?}")
    created = await services.variables.create(
        actor, body["path"], body["value"], bool(body.get("is_secret")), body.get("description") or ""
    )
    return Response(created["path"], media_type=TEXT, status_code=201)


@post("/variables/update/{path:path}", opt={"role": "editor", "audit": "variable.update"}, status_code=200)
async def update_variable(request: Request, path: str) -> Response[str]:
    services, actor = context(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("the body is {value?, is_secret?, description?}")
    await services.variables.update(actor, path.lstrip("/"), body.get("value"), body.get("is_secret"), body.get("description"))
    return Response(path.lstrip("/"), media_type=TEXT)


def _windmill_resource(resource: dict[str, Any], workspace: str) -> dict[str, Any]:
    return {"path": resource["path"], "value": resource["value"], "resource_type": resource["resource_type"],
            "description": resource["description"], "workspace_id": workspace, "is_oauth": False}


def _may_write_resource(actor: Any, resource_type: str) -> None:
    # A script keeps its own state (a resource of type `state`) with the run's own role.
    if not (at_least(actor.role, "editor") or resource_type == "state"):
        raise Forbidden(f"this needs the editor role in {actor.workspace}")


@get("/resources/get/{path:path}", opt={"role": "viewer"})
async def resource(request: Request, path: str) -> dict[str, Any]:
    services, actor = context(request)
    return _windmill_resource(await services.resources.get(actor.workspace, path.lstrip("/")), actor.workspace)


@get("/resources/get_value/{path:path}", opt={"role": "viewer"})
async def resource_value(request: Request, path: str) -> Any:
    services, actor = context(request)
    return await services.resources.value(actor, path.lstrip("/"), interpolate=False)


@get("/resources/get_value_interpolated/{path:path}", opt={"role": "viewer"})
async def resource_value_interpolated(request: Request, path: str) -> Any:
    services, actor = context(request)
    return await services.resources.value(actor, path.lstrip("/"), interpolate=True)


@get("/resources/exists/{path:path}", opt={"role": "viewer"})
async def resource_exists(request: Request, path: str) -> bool:
    services, actor = context(request)
    return await services.resources.exists(actor.workspace, path.lstrip("/"))


@post("/resources/create", opt={"role": "executor", "audit": "resource.create"}, status_code=201)
async def create_resource(request: Request, update_if_exists: bool = False) -> Response[str]:
    services, actor = context(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or "resource_type" not in body:
        raise BadRequest("the body is {path, value, resource_type, description?}")
    _may_write_resource(actor, body["resource_type"])
    created = await services.resources.create(
        actor, body["path"], body["resource_type"], body.get("value"), body.get("description") or "",
        upsert=update_if_exists,
    )
    return Response(created["path"], media_type=TEXT, status_code=201)


@post("/resources/update_value/{path:path}", opt={"role": "executor", "audit": "resource.update"}, status_code=200)
async def update_resource_value(request: Request, path: str) -> Response[str]:
    services, actor = context(request)
    body = await json_body(request)
    if not isinstance(body, dict) or "value" not in body:
        raise BadRequest("the body is {value}")
    current = await services.resources.get(actor.workspace, path.lstrip("/"))
    _may_write_resource(actor, current["resource_type"])
    await services.resources.update(actor, path.lstrip("/"), body["value"])
    return Response(path.lstrip("/"), media_type=TEXT)


@get("/resources/list", opt={"role": "viewer"})
async def list_resources(request: Request, resource_type: str | None = None, page: int = 1, per_page: int = 100) -> list[dict[str, Any]]:
    services, actor = context(request)
    if page < 1 or not 1 <= per_page <= 1000:
        raise BadRequest("page starts at 1; per_page is 1-1000")
    found = await services.resources.list(actor.workspace, resource_type)
    return [_windmill_resource(r, actor.workspace) for r in found[(page - 1) * per_page:page * per_page]]


# -- users, tokens, version ----------------------------------------------------------------------------


@get("/users/whoami", opt={"role": "viewer"})
async def whoami_in_workspace(request: Request) -> dict[str, Any]:
    return _whoami(request)


@get("/api/users/whoami", opt={"role": "optional"})
async def whoami(request: Request) -> dict[str, Any]:
    _, actor = context(request)
    if actor.username is None:
        raise Forbidden("whoami needs a token")
    return _whoami(request)


def _whoami(request: Request) -> dict[str, Any]:
    _, actor = context(request)
    return {
        "username": actor.username, "email": f"{actor.username}@flowmill.local", "is_admin": actor.role == "admin",
        "is_super_admin": actor.superadmin, "operator": actor.role in ("viewer", "executor"), "disabled": False,
        "role": actor.role, "workspace_id": actor.workspace, "groups": [], "folders": [], "folders_owners": [],
    }


@post("/api/users/tokens/create", opt={"role": "viewer", "audit": "token.create"}, status_code=201)
async def create_token(request: Request) -> Response[str]:
    """A new API token for the caller, as text."""
    services, actor = context(request)
    body = await json_body(request)
    expires: int | None = None
    if isinstance(body, dict) and body.get("expiration"):
        try:
            when = datetime.datetime.fromisoformat(str(body["expiration"]).replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("expiration is an ISO-8601 date and time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        expires = int(when.timestamp() * 1000)
    label = (body.get("label") if isinstance(body, dict) else None) or "wmill"
    created = await services.accounts.create_token(actor, str(label), expires)
    return Response(created["token"], media_type=TEXT, status_code=201)


@get("/api/version")
async def version() -> Response[str]:
    return Response(f"Flowmill v{flowmill.__version__}", media_type=TEXT)


WORKSPACE_HANDLERS = [
    run_by_path, run_by_hash, run_flow, get_result_maybe, get_result, get_job, get_root_job_id, cancel, list_jobs,
    set_progress, get_progress, set_flow_user_state, get_flow_user_state, resume_urls, variable_value, variable,
    create_variable, update_variable, resource, resource_value, resource_value_interpolated, resource_exists,
    create_resource, update_resource_value, list_resources, whoami_in_workspace,
]


def windmill_routes() -> list[Any]:
    """The Windmill-compatible surface, ready to mount."""
    return [Router("/api/w/{workspace:str}", route_handlers=WORKSPACE_HANDLERS), whoami, create_token, version]
