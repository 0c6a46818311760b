"""Who a run acts as and what its arguments may hold: `run_trigger.updated_by` (a webhook or
schedule runs as whoever last created or changed it) and `job.resolve_refs` (whether the
run's arguments were written by someone whose `$var:`/`$res:`/`$cred:` references resolve)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the identity of triggers, and whether a run's arguments hold references"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="flowmill", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Trigger",
        tablename="run_trigger",
        column_name="updated_by",
        db_column_name="updated_by",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
            "default": "",
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="Job",
        tablename="job",
        column_name="resolve_refs",
        db_column_name="resolve_refs",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
