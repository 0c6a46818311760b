"""Apply Piccolo migrations to the configured database, and open the right backend.

Migrations run through Piccolo's own machinery (its engine opens a connection per query,
which is fine for a handful of DDL statements at start). The running server then uses the
long-lived connections of `sqlite.py` / `postgres.py`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from app.config import Settings
from app.errors import StartupError
from app.store.base import Database, StoreError
from app.store.postgres import PostgresDatabase, split_schema
from app.store.sqlite import SQLiteDatabase


def open_database(settings: Settings, vacuum: bool = False) -> Database:
    """The backend named by the settings (not yet opened). `vacuum`: a SQLite file made
    without incremental vacuum is converted whatever its size (else only a small one is)."""
    if settings.is_sqlite:
        if vacuum:
            return SQLiteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous, vacuum_limit_bytes=None)
        return SQLiteDatabase(settings.sqlite_path, synchronous=settings.sqlite_synchronous)
    return PostgresDatabase(settings.database_url)


def _use_engine(settings: Settings) -> None:
    from app.store import piccolo_conf

    os.environ["PICCOLO_CONF"] = "app.store.piccolo_conf"
    if settings.is_sqlite:
        from piccolo.engine.sqlite import SQLiteEngine

        piccolo_conf.DB = SQLiteEngine(path=str(settings.sqlite_path))
    else:
        from piccolo.engine.postgres import PostgresEngine

        dsn, schema = split_schema(settings.database_url)
        config: dict[str, object] = {"dsn": dsn}
        if schema:
            config["server_settings"] = {"search_path": schema}
        piccolo_conf.DB = PostgresEngine(config=config)
    from piccolo.apps.migrations.tables import Migration

    Migration._meta.db = piccolo_conf.DB
    # Piccolo asks whether its table exists in *any* PostgreSQL schema unless it is told
    # which: another schema's `migration` table would make it skip creating ours.
    Migration._meta.schema = None if settings.is_sqlite else split_schema(settings.database_url)[1] or "public"


_MIGRATION_ID = re.compile(r'^ID = "([^"]+)"', re.M)


def known_migrations() -> set[str]:
    """The ids of the migrations this program ships, read without importing Piccolo."""
    folder = Path(__file__).parent / "migrations"
    return {m.group(1) for f in folder.glob("flowmill_*.py") if (m := _MIGRATION_ID.search(f.read_text()))}


async def up_to_date(database: Database) -> bool:
    """True when every shipped migration has run and none unknown has: nothing to do, and
    no need to load Piccolo's migration machinery at all (a quarter of a second at start)."""
    try:
        rows = await database.fetch("SELECT name FROM migration WHERE app_name = 'flowmill'")
    except StoreError:
        return False  # no migration table yet
    return {r["name"] for r in rows} == known_migrations()


async def migrate(settings: Settings) -> list[str]:
    """Bring the schema up to date; return the ids of the migrations applied now.

    Refuses (StartupError) a database holding migrations this program does not know: it was
    written by a newer Flowmill.
    """
    _use_engine(settings)
    from piccolo.apps.migrations.commands.base import BaseMigrationManager
    from piccolo.apps.migrations.commands.forwards import run_forwards
    from piccolo.apps.migrations.tables import Migration

    from app.store.piccolo_app import APP_CONFIG

    manager = BaseMigrationManager()
    with contextlib.redirect_stdout(io.StringIO()):
        await manager.create_migration_table()
    known = set(manager.get_migration_ids(manager.get_migration_modules(APP_CONFIG.resolved_migrations_folder_path)))
    ran = set(await Migration.get_migrations_which_ran(app_name="flowmill"))
    newer = sorted(ran - known)
    if newer:
        raise StartupError(
            f"the database was written by a newer Flowmill (unknown migration {newer[-1]}); upgrade Flowmill"
        )
    pending = sorted(known - ran)
    if pending:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = await run_forwards(app_name="flowmill")
        if not result.success:
            raise StartupError(f"migration failed: {result.message}")
    return pending


async def prepare(settings: Settings, vacuum: bool = False) -> Database:
    """Open the long-lived backend, bring the schema up to date, and return the backend.

    Opening first refuses a corrupt or unreadable SQLite file before Piccolo touches it, and
    creates the PostgreSQL schema named in the URL. `vacuum` as for `open_database`.
    """
    database = open_database(settings, vacuum)
    await database.open()
    if await up_to_date(database):
        return database
    try:
        await migrate(settings)
    except BaseException as error:
        await database.close()
        if isinstance(error, StartupError) or not isinstance(error, Exception):
            raise
        # Piccolo and the drivers raise many kinds: say it in one line.
        raise StartupError(f"cannot prepare the database: {type(error).__name__}: {error}") from None
    return database
