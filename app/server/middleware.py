"""The middleware every matched request passes: its id, its authorization, its metrics.

It runs inside Litestar's exception handling, so a refusal raised here leaves in the error
envelope like any other error; the exception handlers (`errors.py`) then add the request id
and count the answer, since it does not pass back through here. It is on every request's
path, so it is written for speed: no regular expression, no random bytes per request.

A request's body must arrive whole within `body_timeout_s` of the request's start: a client
that sends its headers and then trickles its body, or never sends it, is answered 408 and
its handler freed. Only reading the body pays for the deadline, and only until it is whole
(a stream's wait for the client to go away is not cut).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.engine.executor import Executor
from app.errors import RequestTimeout
from app.server.access import authorize
from app.server.audit import record_success
from app.server.logs import AccessLog
from app.server.metrics import Metrics
from app.services.audit import AuditLog

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _given_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-Id, if it is a sane one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if 0 < len(text) <= 64 and _ID_CHARS.issuperset(text) else None
    return None


class BodyDeadlines:
    """Requests whose body is still coming, and by when it must have come. One sweep a second
    cuts those past their deadline, rather than a timer per request: a timer costs ~4-7 µs,
    this ~0.3 µs, on the path of every request with a body."""

    SWEEP_S = 1.0

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def receive(self, receive: Receive, deadline: float) -> Receive:
        """`receive`, cut at `deadline` (loop time) until the body's last part has come."""
        whole = False

        async def receive_in_time() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            task = asyncio.current_task()
            if task is None:  # not run as a task: nothing to cut
                return await receive()
            self._waiting[task] = deadline
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in self._cut:
                    raise
                self._cut.discard(task)
                task.uncancel()
                raise RequestTimeout(f"the request's body did not arrive within {self.timeout_s:g} s") from None
            finally:
                self._waiting.pop(task, None)
            if message["type"] != "http.request" or not message.get("more_body"):
                whole = True
            return message

        return receive_in_time

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.SWEEP_S)
            now = loop.time()
            for task, deadline in list(self._waiting.items()):
                if deadline <= now and task not in self._cut:
                    self._cut.add(task)
                    task.cancel()


def request_middleware(
    metrics: Metrics, access: AccessLog, executor: Executor, body_timeout_s: float, audit: AuditLog
) -> Callable[[ASGIApp], ASGIApp]:
    prefix = secrets.token_hex(4)
    deadlines = BodyDeadlines(body_timeout_s)
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
                    if actor.audited == [] and status < 400:  # a change its service did not audit
                        await record_success(audit, actor, scope["path"], status)
                await send(message)

            request_started()  # runs nobody waits for yield to a burst of requests
            deadline = asyncio.get_running_loop().time() + body_timeout_s
            state["actor"] = actor = await authorize(scope, scope["route_handler"], request_id)  # type: ignore[arg-type]
            await app(scope, deadlines.receive(receive, deadline), send_with_id)
            if status:  # an error answered by the exception handlers was counted there
                elapsed = clock() - started
                observe(scope["method"], scope["path_template"], status, elapsed)
                record(scope["method"], scope["path_template"], status, elapsed, request_id)

        return middleware

    return wrap
