"""`job.role_cap`: the most a run may hold, when it was started by another run whose role was
capped (the script's author held less than the run's identity): its runs hold no more."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T10:00:02:000000"
VERSION = "1.38.0"
DESCRIPTION = "the most a run started by a capped run may hold"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Job",
        tablename="job",
        column_name="role_cap",
        db_column_name="role_cap",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 16,
            "default": None,
            "null": True,
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
