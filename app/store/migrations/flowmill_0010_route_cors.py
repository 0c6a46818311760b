"""`route.cors`: which other origins' pages may call a route from a browser (JSON; none: the
route answers no CORS headers, as before)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-02T10:00:03:000000"
VERSION = "1.38.0"
DESCRIPTION = "a route's CORS settings"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="flowmill", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Route",
        tablename="route",
        column_name="cors",
        db_column_name="cors",
        column_class_name="Text",
        column_class=Text,
        params={
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
