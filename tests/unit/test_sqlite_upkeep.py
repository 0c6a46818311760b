"""SQLite's upkeep on real files: made with incremental vacuum, an older file converted when
opened (if small; else by `migrate --vacuum`), and `maintain` with nothing to do."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from app.config import load_settings
from app.store.base import Database
from app.store.migrate import open_database, prepare
from app.store.sqlite import SQLiteDatabase
from tests.unit.test_store import run_on


def test_maintain_on_a_fresh_database_has_nothing_to_do(backend: str) -> None:
    """(On PostgreSQL it never has: autovacuum does it.)"""
    async def scenario(db: Database) -> None:
        assert (await db.maintain()).more is False

    run_on(backend, scenario)


def test_a_new_sqlite_database_is_made_with_incremental_vacuum(tmp_path: Path) -> None:
    settings = load_settings({"FLOWMILL_HOME": str(tmp_path)})

    async def main() -> None:
        db = await prepare(settings)
        await db.close()

    asyncio.run(main())
    conn = sqlite3.connect(tmp_path / "flowmill.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM job").fetchone()[0] == 0


def _legacy(path: Path, rows: int) -> None:
    """A database as Flowmill made it before incremental vacuum."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE filler (x TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * rows)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()


def _open_and_close(db: SQLiteDatabase) -> None:
    async def main() -> None:
        await db.open()
        await db.close()

    asyncio.run(main())


def test_an_existing_small_sqlite_file_is_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _legacy(path, 2000)
    db = SQLiteDatabase(path)
    _open_and_close(db)
    assert db.incremental
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert sqlite3.connect(path).execute("SELECT count(*) FROM filler").fetchone()[0] == 2000


def test_a_large_one_is_left_with_a_warning_until_migrate_vacuum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "flowmill.db"
    _legacy(path, 4000)  # ~2 MiB, "large" for a limit of 1 MiB
    db = SQLiteDatabase(path, vacuum_limit_bytes=2**20)
    with caplog.at_level(logging.WARNING, logger="flowmill.store"):
        _open_and_close(db)
    assert not db.incremental
    assert "flowmill migrate --vacuum" in caplog.text
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    forced = open_database(load_settings({"FLOWMILL_HOME": str(tmp_path)}), vacuum=True)
    assert isinstance(forced, SQLiteDatabase)
    _open_and_close(forced)
    assert forced.incremental
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 2
