"""Triggers made before `updated_by` existed run as their creator, as they did (a step of its
own: Piccolo runs raw steps before it adds columns)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-02T10:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "triggers run as their creator until someone changes them"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)

    async def fill() -> None:
        await engine_finder().run_ddl("UPDATE run_trigger SET updated_by = created_by WHERE updated_by = ''")

    manager.add_raw(fill)
    return manager
