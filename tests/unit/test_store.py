"""The storage layer on both backends: group commit, isolation of errors, reads."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from app.config import load_settings
from app.store.base import Statement, UniqueViolation
from app.store.migrate import prepare
from tests.support import database_url, drop_schema

INSERT = (
    "INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
    "VALUES ('main', 'ns', $1, $2, 'test', 0, 0)"
)


def run_on(backend: str, scenario) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as home:
        url, schema = database_url(backend, Path(home))

        async def main() -> None:
            db = await prepare(load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url}))
            try:
                await scenario(db)
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
            for _ in range(2):
                db = await prepare(settings)
                await db.close()

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
