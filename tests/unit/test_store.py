"""The storage layer on both backends: group commit, isolation of errors, reads."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from app.config import load_settings
from app.store.base import Statement, UniqueViolation
from app.store.migrate import prepare
from tests.support import PG_URL, database_url, drop_schema

INSERT = (
    "INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
    "VALUES ('main', 'ns', $1, $2, 'test', 0, 0)"
)


def run_on(backend: str, scenario) -> None:  # type: ignore[no-untyped-def]
    """Run `scenario(db)` on a fresh, migrated database of `backend`."""
    run_with_settings(backend, lambda settings, db: scenario(db))


def run_with_settings(backend: str, scenario) -> None:  # type: ignore[no-untyped-def]
    """Run `scenario(settings, db)` on a fresh, migrated database of `backend`."""
    with tempfile.TemporaryDirectory() as home:
        url, schema = database_url(backend, Path(home))
        settings = load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url})

        async def main() -> None:
            db = await prepare(settings)
            try:
                await scenario(settings, db)
            finally:
                await db.close()

        try:
            asyncio.run(main())
        finally:
            if schema:
                drop_schema(schema)


def test_concurrent_writes_all_commit(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        await asyncio.gather(*(db.execute(INSERT, f"k{i}", str(i)) for i in range(500)))
        assert await db.fetchval("SELECT count(*) FROM kv_entry") == 500

    run_on(backend, scenario)


def test_one_failing_write_spoils_no_other(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        await db.execute(INSERT, "taken", "1")
        writes = [db.execute(INSERT, f"ok{i}", "1") for i in range(50)]
        writes.insert(25, db.write(Statement(INSERT, ("fresh", "1")), Statement(INSERT, ("taken", "2"))))
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, Exception)]
        assert len(failures) == 1 and isinstance(failures[0], UniqueViolation)
        assert await db.fetchval("SELECT count(*) FROM kv_entry WHERE key LIKE 'ok%'") == 50
        # the failing write is atomic: its first statement was undone with it
        assert await db.fetchval("SELECT count(*) FROM kv_entry WHERE key = 'fresh'") == 0
        assert await db.fetchval("SELECT value FROM kv_entry WHERE key = 'taken'") == "1"

    run_on(backend, scenario)


def test_a_write_is_committed_when_it_returns(backend: str) -> None:
    """What `write` answered is visible at once to the store's readers and to any other
    connection: it was committed, not merely queued."""

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        for i in range(20):
            await db.execute(INSERT, f"seen{i}", f"v{i}")
            assert await db.fetchval("SELECT value FROM kv_entry WHERE key = $1", f"seen{i}") == f"v{i}"
            if backend == "sqlite":
                other = sqlite3.connect(db.path)
                try:
                    assert other.execute("SELECT value FROM kv_entry WHERE key = ?", (f"seen{i}",)).fetchone() == (f"v{i}",)
                finally:
                    other.close()
            else:
                other = await asyncpg.connect(PG_URL, server_settings=db.server_settings)
                try:
                    assert await other.fetchval("SELECT value FROM kv_entry WHERE key = $1", f"seen{i}") == f"v{i}"
                finally:
                    await other.close()
        rows = await db.fetch("SELECT key, value FROM kv_entry ORDER BY key")
        assert len(rows) == 20 and rows[0]["key"] == "seen0" and rows[0][1] == "v0"
        assert await db.fetchrow("SELECT key FROM kv_entry WHERE key = 'absent'") is None
        assert await db.fetchval("SELECT key FROM kv_entry WHERE key = 'absent'") is None

    run_on(backend, scenario)


def test_a_write_that_need_not_be_durable_commits_all_the_same(backend: str) -> None:
    """`durable=False` skips waiting for the disk, not the commit; the next durable write syncs
    again (and takes the earlier one with it)."""

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        before = db.pool_state()
        await db.write(Statement(INSERT, ("quick", "1")), durable=False)
        assert await db.fetchval("SELECT value FROM kv_entry WHERE key = 'quick'") == "1"
        middle = db.pool_state()
        await db.execute(INSERT, "synced", "2")
        after = db.pool_state()
        assert await db.fetchval("SELECT count(*) FROM kv_entry") == 2
        if backend == "sqlite":
            assert middle["write_batches_unsynced_total"] - before["write_batches_unsynced_total"] == 1
            assert after["write_batches_unsynced_total"] == middle["write_batches_unsynced_total"]
        else:
            assert await db.fetchval("SHOW synchronous_commit") == "on"  # SET LOCAL ended with its transaction

    run_on(backend, scenario)


def test_concurrent_writes_share_the_connections(backend: str) -> None:
    """SQLite: one writer with group commit, so many waiting writes share one transaction (and
    one fsync). PostgreSQL: a bounded pool, whatever the number of writers."""

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        before = db.pool_state()
        await asyncio.gather(*(db.execute(INSERT, f"g{i}", "1") for i in range(300)))
        after = db.pool_state()
        assert await db.fetchval("SELECT count(*) FROM kv_entry") == 300
        if backend == "sqlite":
            assert after["writes_total"] - before["writes_total"] == 300
            assert after["write_batches_total"] - before["write_batches_total"] < 100
        else:
            assert 1 <= after["connections"] <= 10

    run_on(backend, scenario)


def test_connections_are_set_up_for_durability(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        if backend == "sqlite":
            assert await db.fetchval("PRAGMA journal_mode") == "wal"
            assert await db.fetchval("PRAGMA foreign_keys") == 1
            assert await db.fetchval("PRAGMA busy_timeout") > 0
        else:
            assert await db.fetchval("SHOW synchronous_commit") == "on"
            assert await db.fetchval("SELECT current_schema()") == db.schema

    run_on(backend, scenario)


def test_a_sqlite_database_prepares_after_another_in_the_same_process(backend: str) -> None:
    """`prepare` is called once per database, whichever came before it in the process (the
    test suite, the benchmarks and the CLI's helpers open several)."""
    with tempfile.TemporaryDirectory() as first_home, tempfile.TemporaryDirectory() as second_home:
        first_url, schema = database_url(backend, Path(first_home))
        second_url, _ = database_url("sqlite", Path(second_home))

        async def both() -> None:
            for home, url in ((first_home, first_url), (second_home, second_url)):
                db = await prepare(load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url}))
                try:
                    assert await db.fetchval("SELECT count(*) FROM migration WHERE app_name = 'flowmill'") >= 4
                finally:
                    await db.close()

        try:
            asyncio.run(both())
        finally:
            if schema:
                drop_schema(schema)


def test_returning_and_rowcounts(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        result = await db.execute(INSERT + " RETURNING key", "r", "1")
        assert result.rowcount == 1 and result.rows[0]["key"] == "r"
        assert (await db.execute("UPDATE kv_entry SET value = 'x' WHERE key = $1", "nope")).rowcount == 0
        assert (await db.execute("DELETE FROM kv_entry WHERE key = $1", "r")).rowcount == 1

    run_on(backend, scenario)


def test_migrations_are_idempotent(backend: str) -> None:
    with tempfile.TemporaryDirectory() as home:
        url, schema = database_url(backend, Path(home))
        settings = load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url})

        async def twice() -> None:
            counts = []
            for _ in range(2):
                db = await prepare(settings)
                counts.append(await db.fetchval("SELECT count(*) FROM migration WHERE app_name = 'flowmill'"))
                await db.close()
            assert counts[0] == counts[1] >= 4  # the second start applies nothing again

        try:
            asyncio.run(twice())
        finally:
            if schema:
                drop_schema(schema)


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_bad_settings_are_refused(value: str) -> None:
    from app.errors import ConfigError

    with pytest.raises(ConfigError):
        load_settings({"FLOWMILL_AUTH": value})


def test_a_second_database_migrates_beside_a_first(backend: str) -> None:
    """Piccolo once skipped creating its migration table because another schema of the
    same PostgreSQL database had one: each schema must get its own."""
    with tempfile.TemporaryDirectory() as first_home, tempfile.TemporaryDirectory() as second_home:
        first_url, first_schema = database_url(backend, Path(first_home))
        second_url, second_schema = database_url(backend, Path(second_home))

        async def both() -> None:
            for home, url in ((first_home, first_url), (second_home, second_url)):
                db = await prepare(load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url}))
                assert await db.fetchval("SELECT count(*) FROM migration") >= 4
                await db.close()

        try:
            asyncio.run(both())
        finally:
            for schema in (first_schema, second_schema):
                if schema:
                    drop_schema(schema)


class _Exploding(tuple):  # type: ignore[type-arg]
    """Arguments that fail as sqlite3 reads them, with an error that is not sqlite3's."""

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        raise RuntimeError("no argument for you")

    def __len__(self) -> int:
        raise RuntimeError("no argument for you")


def test_a_value_past_64_bits_fails_its_own_write_only(backend: str) -> None:
    from app.store.base import OutOfRange

    wide = (
        "INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
        "VALUES ('main', 'ns', $1, '1', 'test', $2, 0)"
    )

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        for _ in range(3):  # the writer is still there after each round
            before = await db.fetchval("SELECT count(*) FROM kv_entry")
            writes = [db.execute(INSERT, f"ok{before + i}", "1") for i in range(40)]
            writes.insert(10, db.write(Statement(INSERT, (f"spoilt{before}", "1")), Statement(wide, ("big", 10**20))))
            writes.insert(30, db.execute(wide, "negative", -(10**20)))
            results = await asyncio.gather(*writes, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert len(failures) == 2 and all(isinstance(f, OutOfRange) for f in failures), failures
            assert await db.fetchval("SELECT count(*) FROM kv_entry") == before + 40
            assert await db.fetchval("SELECT count(*) FROM kv_entry WHERE key LIKE 'spoilt%'") == 0
        await db.check()
        with pytest.raises(OutOfRange):
            await db.fetch("SELECT count(*) FROM kv_entry WHERE created_at < $1", 10**20)

    run_on(backend, scenario)


def test_the_sqlite_writer_outlives_errors_that_are_not_sqlites(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the writer thread is SQLite's")
    from app.store.base import StoreError

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        writes = [db.execute(INSERT, f"ok{i}", "1") for i in range(20)]
        writes.insert(5, db.write(Statement(INSERT, _Exploding(("x", "1")))))
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], StoreError) and "no argument" in str(failures[0])
        alone = await asyncio.gather(db.write(Statement(INSERT, _Exploding(()))), return_exceptions=True)
        assert isinstance(alone[0], StoreError)
        await db.execute(INSERT, "after", "1")
        assert await db.fetchval("SELECT count(*) FROM kv_entry") == 21
        await db.check()

    run_on(backend, scenario)


def test_a_locked_sqlite_file_fails_writes_and_readiness_until_it_is_released(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("a lock on the file is SQLite's")
    from app.store.base import Unhealthy

    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        await db.check()
        other = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Unhealthy, match="locked"):
                await db.execute(INSERT, "blocked", "1")
            with pytest.raises(Unhealthy):
                await db.check()
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Commits work again once the writer's pending probe gets the lock (on a loaded machine
        # that can take past the stall window, so readiness is polled as a probe would).
        deadline = time.monotonic() + 15
        while True:
            try:
                await db.check()
                break
            except Unhealthy:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        await db.execute(INSERT, "released", "1")
        assert await db.fetchval("SELECT count(*) FROM kv_entry") == 1

    run_with_settings(backend, scenario)
