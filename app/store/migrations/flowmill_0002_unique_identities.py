"""Composite unique indexes (see app/store/indexes.py for why they are a migration of their own)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from app.store.indexes import index_migration

ID = "2026-11-23T06:17:41:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique identities of members, credentials, KV entries and tokens"

UNIQUE_INDEXES = [
    "CREATE UNIQUE INDEX member_workspace_user ON member (workspace_id, username)",
    "CREATE UNIQUE INDEX credential_workspace_name ON credential (workspace_id, name)",
    "CREATE UNIQUE INDEX kv_entry_identity ON kv_entry (workspace_id, namespace, key)",
    "CREATE UNIQUE INDEX api_token_secret ON api_token (secret_hash)",
    "CREATE INDEX audit_entry_workspace ON audit_entry (workspace_id, id)",
]


async def forwards() -> MigrationManager:
    return index_migration(ID, DESCRIPTION, UNIQUE_INDEXES)
