"""An index of runs by concurrency key and status: a batch claim (`queue.claim_due`) counts
the runs of a key that hold its limit before it takes another. Partial (`concurrency_key IS
NOT NULL`): runs without a key, most of them, pay nothing for it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from app.store.indexes import index_migration

ID = "2026-12-15T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "an index of runs by concurrency key"

INDEXES = [
    "CREATE INDEX job_concurrency ON job (concurrency_key, status, started_at) WHERE concurrency_key IS NOT NULL",
]


async def forwards() -> MigrationManager:
    return index_migration(ID, DESCRIPTION, INDEXES)
