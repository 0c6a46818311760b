"""Every error leaves the server as `{"error": {"code", "message", "details"}}`, mapped here once.

A mutating request that fails is also written to the audit log with its outcome; one that
succeeds was already audited in the transaction of its change. Litestar's exception
handlers are synchronous, so the failure's entry is written by a task of its own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.errors import FlowmillError, RateLimited
from app.services.actor import Actor
from app.store.base import OutOfRange, StoreError, Unhealthy

log = logging.getLogger("flowmill.server")

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "rate_limited", 503: "unavailable",
}


def envelope(status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


def _answer(request: Request, status: int, code: str, message: str, details: Any = None,
            headers: dict[str, str] | None = None) -> Response:
    """The envelope, with the request id, counted in the metrics."""
    state = request.scope.setdefault("state", {})
    request_id = state.setdefault("request_id", secrets.token_hex(8))
    state["answered"] = True  # counted and tagged here: the middleware must not do it again
    started = state.get("started")
    route = request.scope.get("path_template") or "<unmatched>"
    elapsed = time.perf_counter() - started if started else 0.0
    request.app.state.metrics.observe(request.method, route, status, elapsed)
    request.app.state.access.record(request.method, route, status, elapsed, request_id)
    return envelope(status, code, message, details, {**(headers or {}), "x-request-id": request_id})


_pending: set[asyncio.Task[None]] = set()


def _audit_failure(request: Request, status: int) -> None:
    handler = request.scope.get("route_handler")
    if request.method not in MUTATING or handler is None or handler.opt.get("audit") is False:
        return
    state = request.scope.get("state", {})
    actor = state.get("actor") or Actor(
        None, request.scope.get("path_params", {}).get("workspace", "main"), None, request_id=state.get("request_id", "")
    )
    action = handler.opt.get("audit") or f"{request.method} {request.scope.get('path_template', '')}"
    outcome = "denied" if status in (401, 403) else "rejected" if status < 500 else "error"
    record = request.app.state.services.audit.record(
        Actor(actor.username, actor.workspace, actor.role, actor.superadmin, actor.request_id, action),
        request.url.path, outcome, status,
    )
    task = asyncio.get_running_loop().create_task(record)
    _pending.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("could not write an audit entry: %s", task.exception())


async def drain_audit() -> None:
    """Wait for failure entries still being written (at shutdown)."""
    if _pending:
        await asyncio.gather(*_pending, return_exceptions=True)


def on_flowmill_error(request: Request, error: FlowmillError) -> Response:
    _audit_failure(request, error.status)
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RateLimited) else None
    if error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if error.headers:
        headers = {**(headers or {}), **error.headers}
    return _answer(request, error.status, error.code, error.message, error.details, headers)


def on_http_error(request: Request, error: HTTPException) -> Response:
    status = error.status_code
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, error.detail)
    _audit_failure(request, status)
    details = error.extra if isinstance(error, ValidationException) else None
    message = error.detail or "error"
    if isinstance(details, list) and details and all(isinstance(d, dict) and d.get("key") for d in details):
        # Name the fields in the message itself: "expiresAt: Expected `int` <= 253402300799999".
        message = "; ".join(f"{d['key']}: {d.get('message', 'invalid')}" for d in details)
    if status == 413:
        message = "the request body is too large"
    return _answer(request, status, CODES.get(status, "error" if status >= 500 else "bad_request"), message, details, error.headers)


def on_store_error(request: Request, error: StoreError) -> Response:
    """What the database refused: a value out of range is the caller's (a 400, should a bound
    at the edge be missing), a database that cannot work now a 503, anything else a 500."""
    if isinstance(error, OutOfRange):
        _audit_failure(request, 400)
        return _answer(request, 400, "bad_request", "a value is out of the range the server stores")
    if isinstance(error, Unhealthy):
        log.error("the database failed on %s %s: %s", request.method, request.url.path, error)
        _audit_failure(request, 503)
        return _answer(request, 503, "unavailable", "the database cannot take this request now; try again later",
                       headers={"Retry-After": "5"})
    return on_unexpected_error(request, error)


def on_unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    _audit_failure(request, 500)
    return _answer(request, 500, "internal_error", "internal server error")


EXCEPTION_HANDLERS = {
    FlowmillError: on_flowmill_error,
    HTTPException: on_http_error,
    StoreError: on_store_error,
    Exception: on_unexpected_error,
}
