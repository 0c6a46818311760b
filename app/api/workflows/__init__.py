"""The durable workflow instances API (DESIGN §4.4), mounted at `/api/workflows` for workspace
`main` and at `/api/v1/w/{workspace}/workflows` for another."""

from app.api.workflows.instances import HANDLERS, TICK_HANDLERS

__all__ = ["HANDLERS", "TICK_HANDLERS"]
