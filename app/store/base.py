"""The storage interface: what every backend offers, and nothing more.

SQL is written once, in PostgreSQL's numbered-parameter style (`$1`, `$2`, ...), and read
the same by both backends (SQLite takes `?1`, `?2`, ... for the same thing). A write is a
list of statements applied atomically and durably before `write` returns: callers answer
a request only after that.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol


PROBE_TIMEOUT_S = 3.0  # a health probe that takes longer says the database is not ready


class Row(Protocol):
    """A result row: `sqlite3.Row` and `asyncpg.Record` both read by name or by position."""

    def __getitem__(self, key: str | int) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    args: Sequence[Any] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    rowcount: int
    rows: list[Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Upkeep:
    """What one step of `Database.maintain` left."""

    more: bool  # space is still to be given back: call again (after a pause)
    free_pages: int = 0  # SQLite: pages free inside the file
    wal_bytes: int = 0  # SQLite: size of the write-ahead log after the step


class StoreError(Exception):
    """The database refused or failed an operation."""


class UniqueViolation(StoreError):
    """A row with the same identity exists already."""


class OutOfRange(StoreError):
    """A value does not fit its column (an integer past its range, a text past its length):
    input the edge should have refused, answered as the caller's mistake all the same."""


class Unhealthy(StoreError):
    """The database cannot take writes or queries now (locked, stuck, unreachable)."""


class Database(abc.ABC):
    """A long-lived connection set to one database."""

    dialect: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; raise `StartupError` with a one-line reason if the database is unusable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and close every connection."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Rows of one read-only query."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """The first row of a read-only query, or None."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    @abc.abstractmethod
    async def write(self, *statements: Statement, durable: bool = True) -> list[Result]:
        """Apply `statements` in one transaction; return once it is committed. With
        `durable=False` the commit may skip waiting for the disk: it survives the process
        dying, and the next durable commit takes it to the disk too (for a write nobody is
        told of before a durable one follows)."""

    async def execute(self, sql: str, *args: Any) -> Result:
        """One write statement, committed on return."""
        return (await self.write(Statement(sql, args)))[0]

    async def check(self) -> None:
        """Raise `Unhealthy` with the reason unless the database takes queries now (and, where
        a backend has one, its writer takes writes): what /readyz answers."""
        try:
            await asyncio.wait_for(self.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Unhealthy(f"a query did not complete within {PROBE_TIMEOUT_S:g} s") from None
        except StoreError as error:
            raise Unhealthy(str(error)) from None

    def _local_lock(self, name: str) -> asyncio.Lock:
        locks: dict[str, asyncio.Lock] = self.__dict__.setdefault("_named_locks", {})
        return locks.setdefault(name, asyncio.Lock())

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Held by one holder at a time, among all processes serving this database: for a
        check and the write it allows (read, then write) that must not interleave with
        another's. One process serves a SQLite database: a lock of this process is enough."""
        async with self._local_lock(name):
            yield

    async def maintain(self) -> Upkeep:
        """One small step of housekeeping after rows were deleted, taken without holding up
        other writes for long; `more` says whether to call again. Nothing here by default:
        PostgreSQL's autovacuum does it (SQLite: `sqlite.py`)."""
        return Upkeep(more=False)

    @abc.abstractmethod
    def pool_state(self) -> dict[str, float]:
        """Numbers about connections and queues, for /metrics."""
