"""Users, sessions, API tokens, workspaces and roles.

The first user to register becomes the instance's superadmin (admin of every workspace);
after that, registering a user takes an admin of `main`. Requests authenticate with a
session JWT or an API token, and every request resolves the caller's role in the workspace
it addresses.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
import re
import time
from typing import Any, NamedTuple

from app.engine.queue import RunQueue
from app.errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from app.security.passwords import DUMMY_HASH, hash_password, verify_password
from app.security.tokens import JwtCodec, new_api_token, secret_matches, split_api_token
from app.services import audit
from app.services.actor import ROLES, Actor, at_least, lowest, now_ms, refuse_run_token
from app.store.base import Database, Statement, UniqueViolation

DEFAULT_WORKSPACE = "main"
# How long an authentication is reused without asking the database again. A change made in
# this process (revoking a token, changing a role) takes effect at once; one made by another
# process sharing a PostgreSQL database within this many seconds.
AUTH_CACHE_S = 2.0
AUTH_CACHE_SIZE = 10_000
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,62}$")
WORKSPACE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MIN_PASSWORD = 8

_ROLE_OF_USER = (
    "SELECT u.is_superadmin, m.role FROM app_user u "
    "LEFT JOIN member m ON m.username = u.username AND m.workspace_id = $2 WHERE u.username = $1"
)
_ROLE_OF_TOKEN = (
    "SELECT t.username, t.secret_hash, t.expires_at, t.revoked_at, u.is_superadmin, m.role FROM api_token t "
    "JOIN app_user u ON u.username = t.username "
    "LEFT JOIN member m ON m.username = t.username AND m.workspace_id = $2 WHERE t.id = $1"
)


class Caller(NamedTuple):
    """Who a token speaks for, in the workspace asked about."""

    username: str
    superadmin: bool
    role: str | None  # None: not a member
    run_id: str | None = None  # a run's token (WM_TOKEN): the run
    expires: int | None = None  # a run's token: when it expires (epoch seconds)
    cap: str | None = None  # a run's token: the most it may hold (carried into tokens it mints)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


class LoginLimiter:
    """Failed logins allowed in a minute: `per_user` for one username (guessing one
    password), ten times as many for one client address (spraying many usernames)."""

    def __init__(self, per_user: int) -> None:
        self.limits = {"user": per_user, "client": per_user * 10}
        self._failures: dict[tuple[str, str], collections.deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        window = self._failures.setdefault(key, collections.deque())
        while window and window[0] <= now - 60:
            window.popleft()
        return window

    def check(self, username: str, client: str) -> None:
        now = time.monotonic()
        for key in (("user", username), ("client", client)):
            window = self._recent(key, now)
            if len(window) >= self.limits[key[0]]:
                raise RateLimited("too many failed logins; try again later", int(window[0] + 60 - now) + 1)

    def fail(self, username: str, client: str) -> None:
        now = time.monotonic()
        for key in (("user", username), ("client", client)):
            self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # forget idle keys so the table stays bounded
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}


class Accounts:
    def __init__(self, db: Database, jwt: JwtCodec, login_attempts_per_minute: int) -> None:
        self.db = db
        self.jwt = jwt
        self.limiter = LoginLimiter(login_attempts_per_minute)
        self._sessions: dict[tuple[str, str], tuple[float, Caller]] = {}
        self._roles: dict[tuple[str, str], tuple[float, str | None]] = {}
        # Whether this process carries a run now (the executor's `knows`): a run's token is
        # reused from the cache only meanwhile, so that it still dies with its run.
        self.run_carried: Callable[[str], bool] = lambda job_id: False

    def forget_sessions(self) -> None:
        """Drop cached authentications (after any change to users, roles or tokens)."""
        self._sessions.clear()
        self._roles.clear()

    async def ensure_default_workspace(self) -> None:
        """Create workspace `main` if it does not exist yet."""
        await self.db.execute(
            "INSERT INTO workspace (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            DEFAULT_WORKSPACE, "Main", now_ms(),
        )

    # -- users ---------------------------------------------------------------------------------

    async def register(self, actor: Actor, username: str, password: str, role: str | None) -> dict[str, Any]:
        """Create a user. Open while no user exists (the first becomes superadmin); afterwards
        only an admin of `main` may, and the user gets `role` (default viewer) in `main`."""
        if not USERNAME.match(username):
            raise BadRequest("username must be 2-63 characters of a-z, 0-9, '_', '.', '-'")
        if len(password) < MIN_PASSWORD or len(password) > 1024:
            raise BadRequest(f"password must be {MIN_PASSWORD} to 1024 characters")
        role = check_role(role or "viewer")
        hashed = await asyncio.to_thread(hash_password, password)
        now = now_ms()
        if actor.username is None:
            # Only while the instance has no user at all; atomic, so two racing first
            # registrations cannot both become superadmin.
            # The claim row makes it atomic on PostgreSQL too, where NOT EXISTS alone is not
            # under read-committed: a second racer fails on the claim's primary key.
            try:
                results = await self.db.write(
                    Statement("INSERT INTO instance_setting (key, value) VALUES ('first_admin', $1)", (username,)),
                    Statement(
                        "INSERT INTO app_user (username, password_hash, is_superadmin, created_at) "
                        "SELECT $1, $2, 1, $3 WHERE NOT EXISTS (SELECT 1 FROM app_user)",
                        (username, hashed, now),
                    ),
                )
            except UniqueViolation:
                results = []
            if not results or results[1].rowcount == 0:
                raise Unauthorized("registration needs an admin's token once a user exists")
            await self.db.write(
                Statement(
                    "INSERT INTO member (workspace_id, username, role) VALUES ($1, $2, 'admin')",
                    (DEFAULT_WORKSPACE, username),
                ),
                audit.entry(actor, f"user:{username}", action="user.register"),
            )
            return {"username": username, "role": "admin", "superadmin": True}
        if not (actor.superadmin or (actor.workspace == DEFAULT_WORKSPACE and at_least(actor.role, "admin"))):
            raise Forbidden("registering users takes an admin of workspace main")
        refuse_run_token(actor, "register users")
        try:
            await self.db.write(
                Statement(
                    "INSERT INTO app_user (username, password_hash, is_superadmin, created_at) VALUES ($1, $2, 0, $3)",
                    (username, hashed, now),
                ),
                Statement(
                    "INSERT INTO member (workspace_id, username, role) VALUES ($1, $2, $3)",
                    (DEFAULT_WORKSPACE, username, role),
                ),
                audit.entry(actor, f"user:{username}", action="user.register"),
            )
        except UniqueViolation:
            raise Conflict(f"user {username} exists already") from None
        self.forget_sessions()
        return {"username": username, "role": role, "superadmin": False}

    async def login(self, username: str, password: str, client: str) -> dict[str, Any]:
        """A session token for a correct password; 401 otherwise, 429 after too many failures."""
        self.limiter.check(username, client)
        row = await self.db.fetchrow("SELECT password_hash FROM app_user WHERE username = $1", username)
        stored = row["password_hash"] if row else DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password, stored)
        if not (ok and row):
            self.limiter.fail(username, client)
            raise Unauthorized("wrong username or password")
        token, expires = self.jwt.issue(username)
        return {"token": token, "expires_at": expires * 1000, "username": username}

    async def user_exists(self) -> bool:
        return await self.db.fetchval("SELECT 1 FROM app_user LIMIT 1") is not None

    # -- who is calling --------------------------------------------------------------------------

    async def authenticate(self, token: str, workspace: str) -> Caller:
        """Who `token` speaks for and their role in `workspace`; 401 for a bad token."""
        key = (token, workspace)
        cached = self._sessions.get(key)
        now = time.time()
        if cached is not None and cached[0] > now and (cached[1].run_id is None or self.run_carried(cached[1].run_id)):
            return cached[1]
        found, valid_until = await self._authenticate(token, workspace)
        if valid_until is None and found.run_id is not None and self.run_carried(found.run_id):
            # A run this process carries (a workflow posting a step per call, say): the answer
            # stands while it does, and no longer (see `run_carried`).
            valid_until = float(found.expires or now)
        if valid_until is not None:
            if len(self._sessions) >= AUTH_CACHE_SIZE:
                self._sessions.clear()
            self._sessions[key] = (min(now + AUTH_CACHE_S, valid_until), found)
        return found

    async def _authenticate(self, token: str, workspace: str) -> tuple[Caller, float | None]:
        """The caller, and until when that answer may be reused (None: not at all)."""
        parts = split_api_token(token)
        if parts is not None:
            row = await self.db.fetchrow(_ROLE_OF_TOKEN, parts[0], workspace)
            if (
                row is None
                or not secret_matches(parts[1], row["secret_hash"])
                or row["revoked_at"] is not None
                or (row["expires_at"] is not None and row["expires_at"] <= now_ms())
            ):
                raise Unauthorized("invalid, expired or revoked API token")
            expires = row["expires_at"] / 1000 if row["expires_at"] is not None else float("inf")
            return Caller(row["username"], bool(row["is_superadmin"]), row["role"]), expires
        claims = self.jwt.verify(token)
        if claims is None:
            raise Unauthorized("invalid or expired token")
        username = str(claims["sub"])
        job = claims.get("job")
        if job is not None:
            # A run's token (WM_TOKEN) is good for its own workspace while the run is alive.
            status = await RunQueue(self.db).status(workspace, str(job))
            if status not in ("QUEUED", "RUNNING"):
                raise Unauthorized("this run's token expired with the run")
        row = await self.db.fetchrow(_ROLE_OF_USER, username, workspace)
        if row is None:
            raise Unauthorized("the token's user no longer exists")
        exp = int(claims["exp"])  # type: ignore[call-overload]
        if job is not None:
            # A run's token holds at most the role its run was given (`cap`, see Jobs.run_script).
            role, superadmin = ("admin" if row["is_superadmin"] else row["role"]), bool(row["is_superadmin"])
            cap = claims.get("cap")
            if role is not None and isinstance(cap, str) and cap in ROLES and lowest(role, cap) != role:
                role, superadmin = lowest(role, cap), False
            # A run's token is never reused from the cache: it must die with its run.
            return Caller(username, superadmin, role, str(job), exp, cap if isinstance(cap, str) else None), None
        return Caller(username, bool(row["is_superadmin"]), row["role"]), float(exp)

    async def role_in(self, username: str, workspace: str) -> str | None:
        """The role `username` holds in `workspace` now ('admin' for the instance admin), or
        None when they are not a member or no longer exist. What a run acts with: looked up
        when it starts, never taken from whoever started it. Cached as authentications are."""
        key = (username, workspace)
        cached = self._roles.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self.db.fetchrow(_ROLE_OF_USER, username, workspace) if username else None
        role = None if row is None else "admin" if row["is_superadmin"] else row["role"]
        if len(self._roles) >= AUTH_CACHE_SIZE:
            self._roles.clear()
        self._roles[key] = (now + AUTH_CACHE_S, role)
        return role

    async def workspace_exists(self, workspace: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM workspace WHERE id = $1", workspace) is not None

    # -- API tokens ------------------------------------------------------------------------------

    async def create_token(self, actor: Actor, label: str, expires_at_ms: int | None) -> dict[str, Any]:
        """A new API token for the caller; its secret is returned now and never again.

        A run's token (WM_TOKEN) gets another token of the same run instead: the same user
        and workspace, good only while the run lives and expiring no later than the caller's
        token. A run never mints a token that outlives it or holds more than its identity."""
        assert actor.username is not None
        if expires_at_ms is not None and expires_at_ms <= now_ms():
            raise BadRequest("expiresAt must be in the future")
        if len(label) > 200:
            raise BadRequest("a token's label is at most 200 characters")
        if actor.run_id is not None:
            return self._run_token(actor, label, expires_at_ms)
        new = new_api_token()
        created = now_ms()
        await self.db.write(
            Statement(
                "INSERT INTO api_token (id, secret_hash, username, label, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                (new.id, new.secret_hash, actor.username, label, created, expires_at_ms),
            ),
            audit.entry(actor, f"token:{new.id}"),
        )
        return {"id": new.id, "label": label, "token": new.token, "created_at": created, "expires_at": expires_at_ms}

    def _run_token(self, actor: Actor, label: str, expires_at_ms: int | None) -> dict[str, Any]:
        assert actor.username is not None and actor.run_id is not None and actor.run_token_exp is not None
        created = now_ms()
        expires = actor.run_token_exp if expires_at_ms is None else min(actor.run_token_exp, expires_at_ms // 1000)
        ttl = max(1, expires - created // 1000)
        capped = {"cap": actor.run_cap} if actor.run_cap else {}
        token, exp = self.jwt.issue(actor.username, ttl_s=ttl, job=actor.run_id, **capped)
        # Not stored: it dies with the run, which no revocation could do sooner.
        return {"id": f"run:{actor.run_id}", "label": label, "token": token, "created_at": created, "expires_at": exp * 1000}

    async def list_tokens(self, actor: Actor) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, label, created_at, expires_at, revoked_at FROM api_token WHERE username = $1 ORDER BY created_at",
            actor.username,
        )
        return [
            {"id": r["id"], "label": r["label"], "created_at": r["created_at"], "expires_at": r["expires_at"],
             "revoked_at": r["revoked_at"]}
            for r in rows
        ]

    async def revoke_token(self, actor: Actor, token_id: str) -> None:
        """Revoke one of the caller's tokens (a superadmin may revoke anyone's)."""
        results = await self.db.write(
            Statement(
                "UPDATE api_token SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND (username = $3 OR $4 = 1)",
                (now_ms(), token_id, actor.username, int(actor.superadmin)),
            ),
            audit.entry(actor, f"token:{token_id}"),
        )
        self.forget_sessions()
        if results[0].rowcount == 0:
            raise NotFound(f"no active token {token_id}")

    # -- workspaces and members --------------------------------------------------------------------

    async def list_workspaces(self, actor: Actor) -> list[dict[str, Any]]:
        if actor.superadmin:
            rows = await self.db.fetch("SELECT id, name, created_at, 'admin' AS role FROM workspace ORDER BY id")
        else:
            rows = await self.db.fetch(
                "SELECT w.id, w.name, w.created_at, m.role FROM workspace w JOIN member m ON m.workspace_id = w.id "
                "WHERE m.username = $1 ORDER BY w.id",
                actor.username,
            )
        return [{"id": r["id"], "name": r["name"], "created_at": r["created_at"], "role": r["role"]} for r in rows]

    async def create_workspace(self, actor: Actor, workspace_id: str, name: str) -> dict[str, Any]:
        """A new workspace (superadmin only); its creator becomes its admin."""
        if not actor.superadmin:
            raise Forbidden("creating workspaces takes the instance admin")
        refuse_run_token(actor, "create workspaces")
        if not WORKSPACE_ID.match(workspace_id):
            raise BadRequest("workspace id must be 1-63 characters of a-z, 0-9, '_', '-'")
        if not 0 < len(name) <= 200:
            raise BadRequest("a workspace's name is 1-200 characters")
        created = now_ms()
        try:
            await self.db.write(
                Statement("INSERT INTO workspace (id, name, created_at) VALUES ($1, $2, $3)", (workspace_id, name, created)),
                Statement(
                    "INSERT INTO member (workspace_id, username, role) VALUES ($1, $2, 'admin')",
                    (workspace_id, actor.username),
                ),
                audit.entry(actor, f"workspace:{workspace_id}"),
            )
        except UniqueViolation:
            raise Conflict(f"workspace {workspace_id} exists already") from None
        self.forget_sessions()
        return {"id": workspace_id, "name": name, "created_at": created, "role": "admin"}

    async def _check_member_change(self, actor: Actor, workspace_id: str, username: str) -> None:
        if actor.username is None:
            raise Unauthorized("this needs a token: Authorization: Bearer <token>")
        # The route names the workspace in its path, not as the request's workspace: look the
        # caller's role up in that workspace.
        role = await self.db.fetchval(
            "SELECT role FROM member WHERE workspace_id = $1 AND username = $2", workspace_id, actor.username
        )
        if not (actor.superadmin or at_least(role, "admin")):
            raise Forbidden(f"managing members of {workspace_id} takes an admin of it")
        refuse_run_token(actor, "change the members of a workspace")
        if not await self.workspace_exists(workspace_id):
            raise NotFound(f"no workspace {workspace_id}")
        if await self.db.fetchval("SELECT 1 FROM app_user WHERE username = $1", username) is None:
            raise NotFound(f"no user {username}")

    async def set_member(self, actor: Actor, workspace_id: str, username: str, role: str) -> dict[str, Any]:
        """Give `username` `role` in the workspace (admins of it only)."""
        check_role(role)
        await self._check_member_change(actor, workspace_id, username)
        await self.db.write(
            Statement(
                "INSERT INTO member (workspace_id, username, role) VALUES ($1, $2, $3) "
                "ON CONFLICT (workspace_id, username) DO UPDATE SET role = excluded.role",
                (workspace_id, username, role),
            ),
            audit.entry(actor, f"workspace:{workspace_id}/member:{username}"),
        )
        self.forget_sessions()
        return {"workspace": workspace_id, "username": username, "role": role}

    async def remove_member(self, actor: Actor, workspace_id: str, username: str) -> None:
        await self._check_member_change(actor, workspace_id, username)
        results = await self.db.write(
            Statement("DELETE FROM member WHERE workspace_id = $1 AND username = $2", (workspace_id, username)),
            audit.entry(actor, f"workspace:{workspace_id}/member:{username}"),
        )
        self.forget_sessions()
        if results[0].rowcount == 0:
            raise NotFound(f"{username} is not a member of {workspace_id}")
