"""Piccolo's view of Flowmill's schema: one app, its tables and its migrations folder."""

import os

from piccolo.conf.apps import AppConfig

from app.store.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="flowmill",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "migrations"),
    table_classes=TABLES,
)
