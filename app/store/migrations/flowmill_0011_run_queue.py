"""The run queue: what the executor needs is copied onto each run (`job.timeout_ms`,
`max_attempts`, `backoff_ms`, the concurrency key, limit and window, `cache_ttl_ms`); a
WAITING run keeps when it wakes and what it waits for; checkpoints of named steps, and the
approvals and events a run is sent (`job_step`); serving processes and their heartbeats
(`worker`).

Raw DDL (see app/store/indexes.py): plain integer and text columns read the same on both
backends. Runs queued or running when the program was upgraded get their script's policy.
"""

import json

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.querystring import QueryString

ID = "2026-12-02T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the run queue: runs carry their policy; waits, checkpoints and workers"

STATEMENTS = [
    "ALTER TABLE job ADD COLUMN timeout_ms BIGINT",
    "ALTER TABLE job ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE job ADD COLUMN backoff_ms BIGINT NOT NULL DEFAULT 1000",
    "ALTER TABLE job ADD COLUMN concurrency_key VARCHAR(255)",
    "ALTER TABLE job ADD COLUMN concurrency_limit INTEGER",
    "ALTER TABLE job ADD COLUMN concurrency_window_ms BIGINT",
    "ALTER TABLE job ADD COLUMN cache_ttl_ms BIGINT",
    "ALTER TABLE job ADD COLUMN wake_at BIGINT",
    "ALTER TABLE job ADD COLUMN waiting_for TEXT",
    "CREATE INDEX job_wake ON job (status, wake_at)",
    "CREATE INDEX job_children ON job (parent_job, status)",
    "CREATE TABLE job_step (job_id VARCHAR(36) NOT NULL, name VARCHAR(255) NOT NULL, seq INTEGER NOT NULL, "
    "result TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (job_id, name))",
    "CREATE TABLE worker (id VARCHAR(64) PRIMARY KEY, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL)",
]


def _policy(settings_text: str | None, path: str) -> list:
    """The run columns of a script's settings as saved (ScriptSettings, camelCase JSON)."""
    settings = json.loads(settings_text) if settings_text else {}
    retry = settings.get("retry") or {}

    def ms(key: str) -> int | None:
        return int(settings[key] * 1000) if settings.get(key) else None

    limit = settings.get("concurrencyLimit")
    return [ms("timeout"), 1 + int(retry.get("attempts") or 0), int((retry.get("backoffS") or 1.0) * 1000),
            (settings.get("concurrencyKey") or path) if limit else None, limit, ms("concurrencyTimeWindowS"),
            ms("cacheTtl")]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        for sql in STATEMENTS:
            await engine.run_ddl(sql)
        rows = await engine.run_querystring(QueryString(
            "SELECT j.id, j.path, v.settings FROM job j JOIN script_version v ON v.hash = j.script_hash "
            "WHERE j.status IN ('QUEUED', 'RUNNING')"
        ))
        for row in rows:
            await engine.run_querystring(QueryString(
                "UPDATE job SET timeout_ms = {}, max_attempts = {}, backoff_ms = {}, concurrency_key = {}, "
                "concurrency_limit = {}, concurrency_window_ms = {}, cache_ttl_ms = {} WHERE id = {}",
                *_policy(row["settings"], row["path"]), row["id"],
            ))

    manager.add_raw(run)
    return manager
