"""Registration and login: `/auth/register`, `/auth/login`."""

from __future__ import annotations

import msgspec
from litestar import Request, post

from app.server.guards import OPTIONAL
from app.services import Services
from app.services.actor import Actor


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str
    role: str | None = None


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str


class UserOut(msgspec.Struct, rename="camel"):
    username: str
    role: str
    superadmin: bool


class LoginOut(msgspec.Struct, rename="camel"):
    token: str
    expires_at: int
    username: str


@post("/auth/register", opt={"role": OPTIONAL, "audit": "user.register"}, status_code=201)
async def register(data: RegisterIn, services: Services, actor: Actor) -> UserOut:
    """Create a user: open while none exists (the first becomes admin), then admins only."""
    return UserOut(**await services.accounts.register(actor, data.username, data.password, data.role))


@post("/auth/login", opt={"audit": False}, status_code=200)
async def login(data: LoginIn, services: Services, request: Request) -> LoginOut:
    """A session token (JWT) for a correct username and password."""
    client = request.client.host if request.client else "unknown"
    return LoginOut(**await services.accounts.login(data.username, data.password, client))


HANDLERS = [register, login]
