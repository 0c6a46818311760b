"""PostgreSQL backend: an asyncpg pool. Several Flowmill processes may share one database.

A URL may carry `?schema=NAME`: every connection then works in that schema (created if
missing), which is how tests and side-by-side installs keep apart in one database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from app.errors import StartupError
from app.store.base import (
    Database, OutOfRange, Result, Row, Statement, StoreError, Unhealthy, UniqueViolation,
)


def split_schema(url: str) -> tuple[str, str | None]:
    """(the URL without `schema=`, the schema named in it or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _classify(error: Exception) -> StoreError:
    if isinstance(error, asyncpg.UniqueViolationError):
        return UniqueViolation(str(error))
    if isinstance(error, asyncpg.DataError):  # a value past its column's range (int32, int64, ...)
        return OutOfRange(str(error))
    if isinstance(error, (OSError, asyncpg.InterfaceError)):  # the connection went away
        return Unhealthy(str(error))
    return StoreError(str(error))


_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
log = logging.getLogger("flowmill.store")


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, min_size: int = 2, max_size: int = 10) -> None:
        self.dsn, self.schema = split_schema(url)
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def server_settings(self) -> dict[str, str]:
        return {"search_path": self.schema} if self.schema else {}

    async def open(self) -> None:
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size, server_settings=self.server_settings
            )
        except (OSError, asyncpg.PostgresError) as error:
            raise StartupError(f"cannot connect to PostgreSQL at {self.dsn}: {error}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _ready_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the database is closed")
        return self._pool

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return await self._ready_pool().fetch(sql, *args)
        except _FAILURES as error:
            raise _classify(error) from error

    async def write(self, *statements: Statement, durable: bool = True) -> list[Result]:
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                if not durable:  # the commit's WAL is flushed by the next synchronous commit, or within ms
                    await conn.execute("SET LOCAL synchronous_commit TO OFF")
                return [await self._run(conn, s) for s in statements]
        except _FAILURES as error:
            raise _classify(error) from error

    @staticmethod
    async def _run(conn: asyncpg.Connection, statement: Statement) -> Result:
        if "RETURNING" in statement.sql:
            rows = await conn.fetch(statement.sql, *statement.args)
            return Result(len(rows), rows)
        status = await conn.execute(statement.sql, *statement.args)
        count = status.rsplit(" ", 1)[-1]
        return Result(int(count) if count.isdigit() else 0, [])

    def pool_state(self) -> dict[str, float]:
        pool = self._pool
        if pool is None:
            return {"connections": 0, "idle": 0}
        return {"connections": pool.get_size(), "idle": pool.get_idle_size()}

    async def listen(self, handlers: dict[str, Callable[[str], None]], schema_channel: Callable[[str, str], str]) -> Listener:
        """A connection of its own that LISTENs on the channels of `handlers` (named for this
        schema by `schema_channel(name, schema)`) and calls each handler with a payload."""
        listener = Listener(self, handlers, schema_channel)
        await listener.open()
        return listener

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Held by one process of all those serving this database at a time: a session advisory
        lock on a connection of its own for as long as the block runs."""
        key = int.from_bytes(hashlib.sha256(f"{self.schema or 'public'}/{name}".encode()).digest()[:8], "big", signed=True)
        async with self._local_lock(name):
            try:
                conn = await self._ready_pool().acquire()
            except _FAILURES as error:
                raise _classify(error) from error
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", key)
                try:
                    yield
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except _FAILURES as error:
                raise _classify(error) from error
            finally:
                await self._ready_pool().release(conn)


class Listener:
    """LISTEN on a dedicated connection, reopened by `ensure` when it was lost. Notifications
    sent while it is down are lost: whoever relies on them also polls."""

    def __init__(self, db: PostgresDatabase, handlers: dict[str, Callable[[str], None]],
                 schema_channel: Callable[[str, str], str]) -> None:
        self.db = db
        self.handlers = handlers
        self.schema_channel = schema_channel
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        conn = await asyncpg.connect(self.db.dsn, server_settings=self.db.server_settings)
        try:
            schema = await conn.fetchval("SELECT current_schema()")
            for name, handler in self.handlers.items():
                await conn.add_listener(self.schema_channel(name, schema), self._callback(handler))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _callback(handler: Callable[[str], None]) -> Callable[[Any, int, str, str], None]:
        def received(conn: Any, pid: int, channel: str, payload: str) -> None:
            try:
                handler(payload)
            except Exception:  # one handler's fault never closes the connection
                log.exception("handling a notification on %s failed", channel)
        return received

    async def ensure(self) -> bool:
        """Reopen the connection if it was lost; True when it was (notifications may be missing)."""
        if self._conn is not None and not self._conn.is_closed():
            return False
        try:
            await self.open()
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("listening for notifications failed: %s", error)
        return True

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
