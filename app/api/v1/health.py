"""`/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get

from app.errors import Unavailable
from app.store.base import StoreError
from app.api.context import context


class Health(msgspec.Struct):
    status: str  # ok


class Ready(msgspec.Struct):
    status: str  # ready
    database: str  # sqlite or postgresql


@get("/healthz", opt={"audit": False})
async def healthz() -> Health:
    """The process answers."""
    return Health("ok")


@get("/readyz")
async def readyz(request: Request) -> Ready:
    """The database answers queries and takes writes (on SQLite: its writer is alive and not
    stuck); 503 with the reason otherwise."""
    services, actor = context(request)
    try:
        await services.db.check()
    except StoreError as error:
        raise Unavailable(f"the database is not ready: {error}") from None
    return Ready("ready", services.db.dialect)


PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", media_type=PROMETHEUS_TEXT)
async def metrics(request: Request) -> Response[str]:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=PROMETHEUS_TEXT)


HANDLERS = [healthz, readyz, metrics]
