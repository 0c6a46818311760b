"""A migration step that creates indexes with raw SQL.

Piccolo tables have no composite unique constraints, and Piccolo runs raw steps before it
creates tables, so indexes live in migrations of their own, each made by `index_migration`.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder


def index_migration(migration_id: str, description: str, statements: list[str]) -> MigrationManager:
    """A migration that runs `statements` (CREATE [UNIQUE] INDEX ...) in order."""
    manager = MigrationManager(migration_id=migration_id, app_name="flowmill", description=description)

    async def create_indexes() -> None:
        engine = engine_finder()
        for sql in statements:
            await engine.run_ddl(sql)

    manager.add_raw(create_indexes)
    return manager
