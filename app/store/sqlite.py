"""SQLite backend: one writer thread with group commit, and one reader connection per thread.

Piccolo's stock SQLite engine opens a connection per query; this module is why the hot path
does not use it. Writes queue up for a single writer thread, which applies everything that
is waiting in one transaction (a savepoint per caller, so one caller's error spoils nobody
else's) and commits once: many writes share one fsync. Reads run inline on the caller's
thread with a connection of its own, which in WAL mode never waits for the writer.
"""

from __future__ import annotations

import asyncio
import queue
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from app.errors import StartupError
from app.store.base import Database, Result, Row, Statement, StoreError, UniqueViolation

MAX_BATCH = 512
_PARAM = re.compile(r"\$(\d+)")
_STOP = object()


def translate(sql: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 - a deliberate cache
    """PostgreSQL's `$1` parameters as SQLite's `?1`."""
    found = _cache.get(sql)
    if found is None:
        found = _cache[sql] = _PARAM.sub(r"?\1", sql)
    return found


def _classify(error: sqlite3.Error) -> StoreError:
    if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
        return UniqueViolation(str(error))
    return StoreError(str(error))


class _Pending:
    __slots__ = ("statements", "future", "loop", "durable")

    def __init__(self, statements: tuple[Statement, ...], future: asyncio.Future, loop: asyncio.AbstractEventLoop,
                 durable: bool):
        self.statements = statements
        self.future = future
        self.loop = loop
        self.durable = durable


def _settle(outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:  # on the event loop
    for item, result, error in outcomes:
        if item.future.done():  # the caller went away (cancelled); the write stands regardless
            continue
        if error is None:
            item.future.set_result(result)
        else:
            item.future.set_exception(error)


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._batches = 0
        self._unsynced = 0  # batches committed without waiting for the disk (no durable write in them)
        self._writes = 0
        self._waiting = 0

    # -- connections -------------------------------------------------------------------------

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StartupError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(read_only=True)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            conn = self._connect(read_only=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as error:
            raise StartupError(f"cannot open the database {self.path}: {error}") from None
        if problem != "ok":
            conn.close()
            raise StartupError(f"the database {self.path} is corrupt: {problem}")
        ready = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, args=(conn, ready), name="flowmill-sqlite-writer", daemon=True)
        self._writer.start()
        ready.wait()

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    # -- reads -------------------------------------------------------------------------------

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        # Indexed point reads take microseconds: a thread hop would cost more than the query.
        try:
            return self._reader().execute(translate(sql), args).fetchall()
        except sqlite3.Error as error:
            raise _classify(error) from error

    # -- writes ------------------------------------------------------------------------------

    async def write(self, *statements: Statement, durable: bool = True) -> list[Result]:
        if self._writer is None:
            raise StoreError("the database is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting += 1
        self._queue.put(_Pending(statements, future, loop, durable))
        try:
            return await asyncio.shield(future)
        finally:
            self._waiting -= 1

    def _write_loop(self, conn: sqlite3.Connection, ready: threading.Event) -> None:
        ready.set()
        stopping = False
        synchronous = self.synchronous
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                # A batch of writes that need not wait for the disk (see `write`) commits
                # with NORMAL: into the WAL, whose next FULL commit syncs them too.
                wanted = self.synchronous if any(item.durable for item in batch) else "NORMAL"
                if wanted != synchronous:
                    conn.execute(f"PRAGMA synchronous = {wanted}")
                    synchronous = wanted
                self._unsynced += wanted == "NORMAL"
                self._commit(conn, batch)
        conn.execute("PRAGMA optimize")
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        # Optimistic first: the whole batch in one transaction without savepoints. Errors are
        # rare (a name taken twice); when one happens, the batch is done again with a
        # savepoint per caller, so that only the failing caller sees its error.
        try:
            outcomes = self._apply(conn, batch, isolate=False)
        except sqlite3.Error:
            outcomes = self._apply(conn, batch, isolate=True)
        self._batches += 1
        self._writes += len(batch)
        # One wake-up per event loop and batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle, settled)

    def _apply(
        self, conn: sqlite3.Connection, batch: list[_Pending], isolate: bool
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                if not isolate:
                    outcomes.append((item, [self._run(conn, s) for s in item.statements], None))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    results = [self._run(conn, s) for s in item.statements]
                except sqlite3.Error as error:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((item, None, _classify(error)))
                else:
                    outcomes.append((item, results, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not isolate:
                raise
            failure = StoreError(f"commit failed: {error}")
            outcomes = [(item, None, failure) for item in batch]
        return outcomes

    @staticmethod
    def _run(conn: sqlite3.Connection, statement: Statement) -> Result:
        cursor = conn.execute(translate(statement.sql), statement.args)
        rows = cursor.fetchall()
        return Result(cursor.rowcount if cursor.rowcount >= 0 else len(rows), rows)

    def pool_state(self) -> dict[str, float]:
        return {
            "readers": len(self._readers),
            "writer_waiting": self._waiting,
            "write_batches_total": self._batches,
            "write_batches_unsynced_total": self._unsynced,
            "writes_total": self._writes,
        }
