"""`/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

from litestar import Response, get

from app.errors import Unavailable
from app.services import Services


@get("/healthz", opt={"audit": False})
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(services: Services) -> dict[str, str]:
    """The database answers."""
    try:
        await services.db.fetchval("SELECT 1")
    except Exception as error:
        raise Unavailable(f"the database does not answer: {error}") from None
    return {"status": "ready", "database": services.db.dialect}


@get("/metrics")
async def metrics(services: Services, metrics: object) -> Response:
    """Prometheus text format."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")  # type: ignore[attr-defined]


HANDLERS = [healthz, readyz, metrics]
