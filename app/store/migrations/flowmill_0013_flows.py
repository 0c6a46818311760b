"""YAML flows: `flow` (a flow and its latest revision, unique by workspace, namespace and name),
`flow_version` (every revision of its YAML, with author and time; found by hash when a run
loads it) and `approval` (the decisions `flow.approval` tasks wait for).

Raw DDL, as 0011 (see app/store/indexes.py): plain integer and text columns read the same on
both backends; JSON is stored as text.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "flows, their revisions, and approvals"

STATEMENTS = [
    "CREATE TABLE flow (id VARCHAR(36) PRIMARY KEY, workspace_id VARCHAR(64) NOT NULL, namespace VARCHAR(200) NOT NULL, "
    "name VARCHAR(200) NOT NULL, description TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '{}', "
    "yaml TEXT NOT NULL, revision INTEGER NOT NULL, hash VARCHAR(32) NOT NULL, created_by VARCHAR(64) NOT NULL, "
    "created_at BIGINT NOT NULL, updated_by VARCHAR(64) NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE UNIQUE INDEX flow_identity ON flow (workspace_id, namespace, name)",
    "CREATE TABLE flow_version (hash VARCHAR(32) NOT NULL, flow_id VARCHAR(36) NOT NULL, revision INTEGER NOT NULL, "
    "yaml TEXT NOT NULL, created_by VARCHAR(64) NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (flow_id, revision))",
    "CREATE INDEX flow_version_hash ON flow_version (hash)",
    "CREATE TABLE approval (id VARCHAR(36) PRIMARY KEY, workspace_id VARCHAR(64) NOT NULL, job_id VARCHAR(36) NOT NULL, "
    "task VARCHAR(255) NOT NULL, message TEXT NOT NULL DEFAULT '', form TEXT, role VARCHAR(16), "
    "status VARCHAR(16) NOT NULL, form_values TEXT, decided_by VARCHAR(64), decided_at BIGINT, "
    "created_at BIGINT NOT NULL, expires_at BIGINT)",
    "CREATE INDEX approval_status ON approval (workspace_id, status)",
    "CREATE INDEX approval_job ON approval (job_id)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        for sql in STATEMENTS:
            await engine.run_ddl(sql)

    manager.add_raw(run)
    return manager
