"""Durable workflows: `job.pause_requested`, set when somebody asks a run to pause. A run that
nothing carries (QUEUED, WAITING) is paused at once; a RUNNING one at its next step boundary,
where its carrier clears the flag as the run becomes PAUSED (app/engine/queue.py). And an
index of a run's checkpoints by their order.

Raw DDL, as 0011: a plain integer column reads the same on both backends. Whether a script's
`main` is a workflow is kept in its version's settings JSON, which needs no migration.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-14T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "workflows: a run's pause request"

STATEMENTS = [
    "ALTER TABLE job ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0",
    # A checkpoint takes the next `seq` of its run (MAX + 1): found in the index, not by reading
    # every step the run stored before (a 1,000-step workflow read half a million rows).
    "CREATE INDEX job_step_seq ON job_step (job_id, seq)",
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        for sql in STATEMENTS:
            await engine.run_ddl(sql)

    manager.add_raw(run)
    return manager
