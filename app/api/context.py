"""What every handler works with: the services, and the caller resolved by the middleware.

Handlers take the request and unpack these themselves rather than through Litestar's
dependency injection, which costs a sizeable share of a small request's time.
"""

from __future__ import annotations

from litestar import Request

from app.services import Services
from app.services.actor import Actor


def context(request: Request) -> tuple[Services, Actor]:
    """(the services, the caller) of this request."""
    return request.app.state.services, request.scope["state"]["actor"]
