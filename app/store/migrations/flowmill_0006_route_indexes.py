"""Unique identities and indexes of routes, static files and triggers (see app/store/indexes.py for why raw SQL)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from app.store.indexes import index_migration

ID = "2026-11-23T09:29:56:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes of routes, static files and triggers"

INDEXES = [
    "CREATE UNIQUE INDEX route_identity ON route (route_key, method)",
    "CREATE INDEX route_workspace ON route (workspace_id, path)",
    "CREATE UNIQUE INDEX static_file_identity ON static_file (workspace_id, folder, path)",
    "CREATE UNIQUE INDEX trigger_key ON run_trigger (key)",
    "CREATE INDEX trigger_due ON run_trigger (kind, enabled, next_fire_at)",
]


async def forwards() -> MigrationManager:
    return index_migration(ID, DESCRIPTION, INDEXES)
