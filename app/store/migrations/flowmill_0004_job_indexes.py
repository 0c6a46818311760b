"""Indexes and unique identities of the scripts and jobs tables (see app/store/indexes.py for why raw SQL)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from app.store.indexes import index_migration

ID = "2026-11-23T06:28:50:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes of scripts, jobs, logs, variables and resources"

INDEXES = [
    "CREATE UNIQUE INDEX script_identity ON script (workspace_id, path)",
    "CREATE INDEX script_version_path ON script_version (workspace_id, path, created_at)",
    "CREATE INDEX job_queue ON job (status, scheduled_for)",
    "CREATE INDEX job_listing ON job (workspace_id, created_at)",
    "CREATE INDEX job_cache ON job (cache_key, finished_at)",
    "CREATE INDEX job_log_job ON job_log (job_id, id)",
    "CREATE UNIQUE INDEX variable_identity ON variable (workspace_id, path)",
    "CREATE UNIQUE INDEX resource_identity ON resource (workspace_id, path)",
    "CREATE UNIQUE INDEX resource_type_identity ON resource_type (workspace_id, name)",
]


async def forwards() -> MigrationManager:
    return index_migration(ID, DESCRIPTION, INDEXES)
