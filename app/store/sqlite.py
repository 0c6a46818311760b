"""SQLite backend: one writer thread with group commit, and one reader connection per thread.

Piccolo's stock SQLite engine opens a connection per query; this module is why the hot path
does not use it. Writes queue up for a single writer thread, which applies everything that
is waiting in one transaction (a savepoint per caller, so one caller's error spoils nobody
else's) and commits once: many writes share one fsync. Reads run inline on the caller's
thread with a connection of its own, which in WAL mode never waits for the writer.

The writer outlives anything a write does: a statement that fails (a constraint, an integer
past 64 bits, any exception) fails its own caller only, and a batch that fails as a whole
(the file locked by another process, a full disk) fails its callers and the writer goes on
with the next one. `check` says whether it is healthy, for /readyz.

The file stays as small as what it holds: a new database is made with `auto_vacuum =
INCREMENTAL` (an existing one is converted by a VACUUM when it is opened, if it is small
enough for that to be quick), and `maintain` gives back the pages deleting freed, a few at a
time, then checkpoints the write-ahead log and, when the writer is idle, truncates it. Both run
on the writer thread, between batches, like any write.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from app.errors import StartupError
from app.store.base import (
    PROBE_TIMEOUT_S, Database, OutOfRange, Result, Row, Statement, StoreError, Unhealthy, UniqueViolation, Upkeep,
)

MAX_BATCH = 512
STALL_S = 5.0  # a batch still not committed after this long means the writer is stuck
CLOSE_TIMEOUT_S = 10.0
VACUUM_AT_OPEN_MAX_BYTES = 64 * 1024 * 1024  # a database without incremental vacuum is converted at open up to this
VACUUM_STEP_PAGES = 128  # pages given back per `maintain` step: 512 KiB of 4 KiB pages, ~3 ms of the writer
CHECKPOINT_BUSY_MS = 50  # how long truncating the WAL may wait for readers before it gives up until next time
WAL_LIMIT_BYTES = 32 * 1024 * 1024  # the WAL is cut back to this whenever it starts over (journal_size_limit)
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
log = logging.getLogger("flowmill.store")
_PARAM = re.compile(r"\$(\d+)")
_STOP = object()


def translate(sql: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 - a deliberate cache
    """PostgreSQL's `$1` parameters as SQLite's `?1`."""
    found = _cache.get(sql)
    if found is None:
        found = _cache[sql] = _PARAM.sub(r"?\1", sql)
    return found


def _classify(error: BaseException) -> StoreError:
    if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
        return UniqueViolation(str(error))
    if isinstance(error, OverflowError):  # sqlite3 binds integers of 64 bits at most
        return OutOfRange(str(error))
    if isinstance(error, sqlite3.Error):
        return StoreError(str(error))
    return StoreError(f"{type(error).__name__}: {error}")


class _StatementFailed(Exception):
    """A statement of an optimistic batch failed: the batch is done again, one savepoint a caller."""


class _Pending:
    __slots__ = ("statements", "future", "loop", "durable")

    def __init__(self, statements: tuple[Statement, ...], future: asyncio.Future, loop: asyncio.AbstractEventLoop,
                 durable: bool):
        self.statements = statements
        self.future = future
        self.loop = loop
        self.durable = durable


class _Chore(_Pending):
    """A step of `maintain`, done by the writer outside any transaction."""

    __slots__ = ()


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

    def __init__(self, path: Path, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
                 vacuum_limit_bytes: int | None = VACUUM_AT_OPEN_MAX_BYTES) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.vacuum_limit_bytes = vacuum_limit_bytes  # None: convert to incremental vacuum whatever the size
        self.incremental = False  # whether the file has auto_vacuum = INCREMENTAL (known once open)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._batches = 0
        self._unsynced = 0  # batches committed without waiting for the disk (no durable write in them)
        self._writes = 0
        self._waiting = 0
        # Read by `check` on the event loop, written by the writer thread.
        self._busy_since: float | None = None  # monotonic start of the batch being applied
        self._failing: str | None = None  # why the last batch failed as a whole, until one commits

    # -- connections -------------------------------------------------------------------------

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            # Before anything is written: a new file is made with it. On an existing file it
            # only takes effect with a VACUUM (`_adopt_incremental_vacuum`).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StartupError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
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
        self._adopt_incremental_vacuum(conn)
        ready = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, args=(conn, ready), name="flowmill-sqlite-writer", daemon=True)
        self._writer.start()
        ready.wait()

    def _adopt_incremental_vacuum(self, conn: sqlite3.Connection) -> None:
        """Convert a database made without incremental vacuum (before Flowmill set it) with one
        VACUUM, when it is small enough for that to take a moment; a larger one is left as it
        is, reusing the pages it frees without shrinking, until `flowmill migrate --vacuum`."""
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
            self.incremental = True
            return
        size = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        if self.vacuum_limit_bytes is not None and size > self.vacuum_limit_bytes:
            log.warning("the database %s (%d MiB) was made without incremental vacuum: it reuses the space "
                        "pruning frees but does not shrink; stop the server and run `flowmill migrate --vacuum` "
                        "once to convert it", self.path, size // 2**20)
            return
        started = time.monotonic()
        try:
            conn.execute("VACUUM")  # with auto_vacuum = INCREMENTAL, set by `_connect`
        except sqlite3.Error as error:  # a full disk (VACUUM needs a copy's room): not worth refusing to start
            log.warning("could not convert %s to incremental vacuum: %s", self.path, error)
            return
        self.incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL
        log.info("converted %s (%d MiB) to incremental vacuum in %.1f s", self.path, size // 2**20,
                 time.monotonic() - started)

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            # Bounded: a writer stuck on a locked file must not hold the process (it is a daemon).
            await asyncio.to_thread(self._writer.join, CLOSE_TIMEOUT_S)
            stuck, self._writer = self._writer.is_alive(), None
            if stuck:
                raise Unhealthy(f"the database writer did not finish within {CLOSE_TIMEOUT_S:g} s")
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
        except (sqlite3.Error, OverflowError) as error:
            raise _classify(error) from error

    # -- writes ------------------------------------------------------------------------------

    def _check_writer(self) -> None:
        """Refuse work for a writer thread that is not there to do it."""
        if self._writer is None:
            raise StoreError("the database is closed")
        if not self._writer.is_alive():
            raise Unhealthy("the database writer has stopped")

    async def write(self, *statements: Statement, durable: bool = True) -> list[Result]:
        self._check_writer()
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
            chores = [item for item in batch if isinstance(item, _Chore)]
            if chores:
                batch = [item for item in batch if not isinstance(item, _Chore)]
            if batch:
                conn, synchronous = self._write_batch(conn, batch, synchronous)
            for chore in chores:
                conn, synchronous = self._do_chore(conn, chore, synchronous)
        try:
            conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        conn.close()

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Pending], synchronous: str) -> tuple[sqlite3.Connection, str]:
        """Commit `batch`; the connection to go on with and its synchronous setting."""
        self._busy_since = time.monotonic()
        try:
            # A batch of writes that need not wait for the disk (see `write`) commits
            # with NORMAL: into the WAL, whose next FULL commit syncs them too.
            wanted = self.synchronous if any(item.durable for item in batch) else "NORMAL"
            if wanted != synchronous:
                conn.execute(f"PRAGMA synchronous = {wanted}")
                synchronous = wanted
            self._unsynced += wanted == "NORMAL"
            self._commit(conn, batch)
        except BaseException as error:  # noqa: BLE001 - whatever happens, the writer goes on
            log.exception("a batch of %d writes failed", len(batch))
            self._failing = f"{type(error).__name__}: {error}"
            self._deliver([(item, None, StoreError(f"the write failed: {error}")) for item in batch])
            conn, synchronous = self._recover(conn), ""  # unknown now: set by the next batch
        finally:
            self._busy_since = None
        return conn, synchronous

    def _do_chore(self, conn: sqlite3.Connection, chore: _Chore, synchronous: str) -> tuple[sqlite3.Connection, str]:
        self._busy_since = time.monotonic()
        try:
            self._deliver([(chore, self._upkeep(conn), None)])
        except BaseException as error:  # noqa: BLE001 - as for a batch: the writer goes on
            log.warning("database upkeep failed: %s", error)
            self._deliver([(chore, None, _classify(error))])
            conn, synchronous = self._recover(conn), ""
        finally:
            self._busy_since = None
        return conn, synchronous

    def _upkeep(self, conn: sqlite3.Connection) -> Upkeep:
        """One step: give back up to VACUUM_STEP_PAGES free pages; once none are left,
        checkpoint the WAL, and truncate it when nobody waits for the writer."""
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free and self.incremental:
            # executescript steps the pragma to its end; execute would free one page only.
            conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free:
                return Upkeep(True, free, self._wal_bytes())
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if self._queue.empty():
            # TRUNCATE waits for readers to leave the WAL: briefly, or it gives up until next time.
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.OperationalError:
                pass
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        return Upkeep(False, free, self._wal_bytes())

    def _wal_bytes(self) -> int:
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except OSError:
            return 0

    async def maintain(self) -> Upkeep:
        self._check_writer()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Chore((), future, loop, False))
        return await asyncio.shield(future)

    def _recover(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """The connection back out of any transaction, or a new one if it is broken."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return conn
        except BaseException:  # noqa: BLE001
            try:
                conn.close()
                return self._connect(read_only=False)
            except BaseException:  # noqa: BLE001 - keep the old one; `check` reports the failures
                log.exception("cannot reopen the database writer's connection")
                return conn

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        # Optimistic first: the whole batch in one transaction without savepoints. Errors are
        # rare (a name taken twice); when one happens, the batch is done again with a
        # savepoint per caller, so that only the failing caller sees its error.
        try:
            outcomes = self._apply(conn, batch, isolate=False)
        except _StatementFailed:
            outcomes = self._apply(conn, batch, isolate=True)
        self._batches += 1
        self._writes += len(batch)
        self._deliver(outcomes)

    @staticmethod
    def _deliver(outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:
        # One wake-up per event loop and batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def _apply(
        self, conn: sqlite3.Connection, batch: list[_Pending], isolate: bool
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:  # locked by another process past busy_timeout, I/O error...
            return self._failed_whole(batch, error)
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        for item in batch:
            if not isolate:
                try:
                    outcomes.append((item, [self._run(conn, s) for s in item.statements], None))
                except Exception as error:
                    conn.execute("ROLLBACK")
                    if len(batch) == 1:  # nobody else to spare: this caller's error, no second pass
                        return [(item, None, _classify(error))]
                    raise _StatementFailed from error
                continue
            conn.execute("SAVEPOINT op")
            try:
                results = [self._run(conn, s) for s in item.statements]
            except Exception as error:
                conn.execute("ROLLBACK TO op")
                outcomes.append((item, None, _classify(error)))
            else:
                outcomes.append((item, results, None))
            conn.execute("RELEASE op")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return self._failed_whole(batch, error)
        self._failing = None
        return outcomes

    def _failed_whole(self, batch: list[_Pending], error: sqlite3.Error) -> list[tuple[_Pending, Any, BaseException | None]]:
        self._failing = str(error)
        failure = Unhealthy(f"the database did not commit: {error}")
        return [(item, None, failure) for item in batch]

    @staticmethod
    def _run(conn: sqlite3.Connection, statement: Statement) -> Result:
        cursor = conn.execute(translate(statement.sql), statement.args)
        rows = cursor.fetchall()
        return Result(cursor.rowcount if cursor.rowcount >= 0 else len(rows), rows)

    async def check(self) -> None:
        writer = self._writer
        if writer is None or not writer.is_alive():
            raise Unhealthy("the database writer has stopped")
        busy = self._busy_since
        if busy is not None and time.monotonic() - busy > STALL_S:
            raise Unhealthy(f"a write has not completed for {time.monotonic() - busy:.0f} s")
        if self._failing is not None:
            # The last batch failed as a whole: an empty write says whether commits work again.
            try:
                await asyncio.wait_for(self.write(), PROBE_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise Unhealthy(f"a write did not complete within {PROBE_TIMEOUT_S:g} s") from None
            except StoreError as error:
                raise Unhealthy(str(error)) from None
        await super().check()

    def pool_state(self) -> dict[str, float]:
        return {
            "readers": len(self._readers),
            "writer_waiting": self._waiting,
            "write_batches_total": self._batches,
            "write_batches_unsynced_total": self._unsynced,
            "writes_total": self._writes,
        }
