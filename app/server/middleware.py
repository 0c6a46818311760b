"""The middleware every matched request passes: its id, its authorization, its metrics.

It runs inside Litestar's exception handling, so a refusal raised here leaves in the error
envelope like any other error; the exception handlers (`errors.py`) then add the request id
and count the answer, since it does not pass back through here. It is on every request's
path, so it is written for speed: no regular expression, no random bytes per request.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.engine.executor import Executor
from app.server.access import authorize
from app.server.logs import AccessLog
from app.server.metrics import Metrics

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _given_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-Id, if it is a sane one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if 0 < len(text) <= 64 and _ID_CHARS.issuperset(text) else None
    return None


def request_middleware(metrics: Metrics, access: AccessLog, executor: Executor) -> Callable[[ASGIApp], ASGIApp]:
    prefix = secrets.token_hex(4)
    numbers = itertools.count(1)
    observe = metrics.observe
    record = access.record
    request_started = executor.request_started
    clock = time.perf_counter

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request_id = _given_id(scope["headers"]) or f"{prefix}{next(numbers):x}"
            header = (b"x-request-id", request_id.encode())
            state = scope.setdefault("state", {})
            state["request_id"] = request_id
            state["started"] = started = clock()
            status = 0

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start" and not state.get("answered"):
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            request_started()  # runs nobody waits for yield to a burst of requests
            state["actor"] = await authorize(scope, scope["route_handler"], request_id)  # type: ignore[arg-type]
            await app(scope, receive, send_with_id)
            if status:  # an error answered by the exception handlers was counted there
                elapsed = clock() - started
                observe(scope["method"], scope["path_template"], status, elapsed)
                record(scope["method"], scope["path_template"], status, elapsed, request_id)

        return middleware

    return wrap
