"""Indexes retention walks (app/engine/retention.py): finished runs by when they finished, over
all runs (the age rule) and per runnable (the count rule, and the walk over runnables).

Both are partial (`finished_at IS NOT NULL`): a queued or running run is in neither, so
enqueueing and claiming pay nothing for them; a run enters them once, when it finishes.
Audit entries are pruned by `audit_entry_at`, which exists already.

Numbered 0012 beside the run queue's 0011, made at the same time; it needs only the tables
of 0010 and before (Piccolo orders migrations by ID, and this ID sorts after both).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from app.store.indexes import index_migration

ID = "2026-12-02T12:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "indexes of finished runs, for retention"

INDEXES = [
    "CREATE INDEX job_finished ON job (finished_at) WHERE finished_at IS NOT NULL",
    "CREATE INDEX job_runnable_finished ON job (workspace_id, path, finished_at, id) WHERE finished_at IS NOT NULL",
]


async def forwards() -> MigrationManager:
    return index_migration(ID, DESCRIPTION, INDEXES)
