"""Piccolo's configuration module. `DB` is set by `app.store.migrate` before migrations run;
the generator (`piccolo migrations new flowmill --auto`) sees a scratch SQLite file."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.sqlite import SQLiteEngine

DB = SQLiteEngine(path="/tmp/flowmill-piccolo-scratch.db")
APP_REGISTRY = AppRegistry(apps=["app.store.piccolo_app"])
