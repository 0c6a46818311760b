"""`/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

from litestar import Request, Response, get

from app.errors import Unavailable
from app.store.base import StoreError
from app.api.context import context


@get("/healthz", opt={"audit": False})
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    """The database answers queries and takes writes (on SQLite: its writer is alive and not
    stuck); 503 with the reason otherwise."""
    services, actor = context(request)
    try:
        await services.db.check()
    except StoreError as error:
        raise Unavailable(f"the database is not ready: {error}") from None
    return {"status": "ready", "database": services.db.dialect}


@get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


HANDLERS = [healthz, readyz, metrics]
