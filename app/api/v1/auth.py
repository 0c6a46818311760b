"""Registration and login: `/auth/register`, `/auth/login`."""

from __future__ import annotations

import msgspec
from litestar import Request, post

from app.services.actor import OPTIONAL
from app.api.context import context


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
async def register(request: Request, data: RegisterIn) -> UserOut:
    """Create a user: open while none exists (the first becomes admin), then admins only."""
    services, actor = context(request)
    return UserOut(**await services.accounts.register(actor, data.username, data.password, data.role))


@post("/auth/login", opt={"audit": False, "errors": (429,)}, status_code=200)
async def login(data: LoginIn, request: Request) -> LoginOut:
    """A session token (JWT) for a correct username and password."""
    services, actor = context(request)
    client = request.client.host if request.client else "unknown"
    return LoginOut(**await services.accounts.login(data.username, data.password, client))


HANDLERS = [register, login]
