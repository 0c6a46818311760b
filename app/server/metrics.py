"""Prometheus metrics: requests and their latency by route template, and the database's state.

The middleware also gives every request an id (the caller's `X-Request-Id` if sane, else a
new one), returned in the `X-Request-Id` header and recorded with audit entries and runs.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from app.store.base import Database

disable_created_metrics()  # the _created series only add noise to every scrape
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _DatabaseCollector:
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("flowmill_db_pool", "Database connections and queues", labels=["backend", "measure"])
        for measure, value in self.db.pool_state().items():
            family.add_metric([self.db.dialect, measure], value)
        yield family


class Metrics:
    """One registry per server, so that several servers can live in one process (tests)."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flowmill_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "flowmill_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))  # type: ignore[arg-type]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_middleware(metrics_of: Callable[[Scope], Metrics]) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: request id in and out, and one observation per answered request."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
            request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(8)
            scope.setdefault("state", {})["request_id"] = request_id
            status = 500
            started = time.perf_counter()

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                route = scope.get("path_template") or "<unmatched>"
                metrics_of(scope).observe(scope["method"], route, status, time.perf_counter() - started)

        return middleware

    return wrap
