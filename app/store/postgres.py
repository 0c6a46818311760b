"""PostgreSQL backend: an asyncpg pool. Several Flowmill processes may share one database.

A URL may carry `?schema=NAME`: every connection then works in that schema (created if
missing), which is how tests and side-by-side installs keep apart in one database.
"""

from __future__ import annotations

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
