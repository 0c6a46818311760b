"""The Flows service beyond its HTTP API: what the flow runner and runnables call (`by_path`,
`version_by_hash`), its own role check, and saves that race."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import Forbidden, NotFound
from app.services.actor import Actor
from app.plugins import default_registry
from app.services.flows import Flows, FlowVersion, yaml_hash
from app.store.base import Database
from app.store.migrate import prepare
from tests.support import database_url, drop_schema

EDITOR = Actor("ed", "main", "editor")


def flow_yaml(name: str, message: str = "hi") -> str:
    return (f"name: {name}\nnamespace: team\n"
            f"tasks:\n  - name: say\n    type: util.log\n    properties:\n      message: {message}\n")


def run_on(backend: str, scenario: Callable[[Flows, Database], Awaitable[None]]) -> None:
    """Run `scenario(flows, db)` on a fresh, migrated database of `backend`."""
    with tempfile.TemporaryDirectory() as home:
        url, schema = database_url(backend, Path(home))
        settings = load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url})

        async def main() -> None:
            db = await prepare(settings)
            try:
                await scenario(Flows(db, default_registry()), db)
            finally:
                await db.close()

        try:
            asyncio.run(main())
        finally:
            if schema:
                drop_schema(schema)


def test_by_path_and_version_by_hash(backend: str) -> None:
    async def scenario(flows: Flows, db: Database) -> None:
        first = await flows.create(EDITOR, flow_yaml("one", "v1"))
        second = await flows.update(EDITOR, first.id, flow_yaml("one", "v2"))
        assert first.hash == yaml_hash(first.yaml) and second.hash != first.hash
        assert (await flows.by_path("main", "f/team/one")) == second
        for path in ("f/team", "u/team/one", "f/team/one/extra", "f/other/one", "team/one", "", "f//one"):
            with pytest.raises(NotFound):
                await flows.by_path("main", path)
        with pytest.raises(NotFound):
            await flows.by_path("elsewhere", "f/team/one")
        assert await flows.version_by_hash("main", first.hash) == FlowVersion(first.id, 1, first.yaml, first.hash)
        assert (await flows.version_by_hash("main", second.hash)).revision == 2
        with pytest.raises(NotFound):
            await flows.version_by_hash("elsewhere", first.hash)
        restored = await flows.restore(EDITOR, first.id, 1)  # revision 3 has revision 1's YAML and hash
        assert restored.hash == first.hash and (await flows.version_by_hash("main", first.hash)).revision == 3
        await flows.delete(EDITOR, first.id)
        with pytest.raises(NotFound):
            await flows.version_by_hash("main", first.hash)
        assert await db.fetchval("SELECT count(*) FROM flow_version") == 0

    run_on(backend, scenario)


def test_saves_that_race_each_get_their_revision(backend: str) -> None:
    async def scenario(flows: Flows, db: Database) -> None:
        flow = await flows.create(EDITOR, flow_yaml("busy"))
        saved = await asyncio.gather(*(flows.update(EDITOR, flow.id, flow_yaml("busy", f"v{i}")) for i in range(6)))
        assert sorted(s.revision for s in saved) == [2, 3, 4, 5, 6, 7]
        assert (await flows.get("main", flow.id)).revision == 7
        assert [r.revision for r in await flows.revisions("main", flow.id)] == [7, 6, 5, 4, 3, 2, 1]

    run_on(backend, scenario)


def test_the_service_checks_the_role_itself(backend: str) -> None:
    """Callers other than the HTTP API (sync, the CLI) get the same rule: editors change flows."""
    async def scenario(flows: Flows, db: Database) -> None:
        flow = await flows.create(EDITOR, flow_yaml("guarded"))
        for role in ("viewer", "executor"):
            actor = Actor("someone", "main", role)
            for change in (flows.create(actor, flow_yaml("other")), flows.update(actor, flow.id, flow_yaml("guarded", "x")),
                           flows.delete(actor, flow.id), flows.restore(actor, flow.id, 1),
                           flows.import_flow(actor, flow_yaml("imported"))):
                with pytest.raises(Forbidden):
                    await change
        assert (await flows.get("main", flow.id)).revision == 1

    run_on(backend, scenario)
