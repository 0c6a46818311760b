"""Workflow instances from the TUI against a real server's instances API (/api/workflows):
listed by workflow, started from a form, paused, resumed, restarted and terminated, each
action checked on the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer
from tests.tui.conftest import Seeded, drive, key_hints_problems, screen_text, until
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.screens.workflows import InstanceScreen, WorkflowsScreen
from tui.widgets.tables import Table

BASE = "/api/workflows/orders.fulfil/instances"


@pytest.fixture
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        yield client


def status(api: httpx.Client, instance_id: str) -> str:
    return str(api.get(f"{BASE}/{instance_id}").json()["status"])


def test_instances_are_listed_started_and_managed(make_app: Any, seeded: Seeded, api: httpx.Client) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await pilot.press("4")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen) and
                    "o-1" in [str(k.value) for k in app.screen.query_one("#instances", Table).rows], what="the instances")
        text = screen_text(app)
        assert "orders.fulfil" in text and "waiting" in text
        assert not key_hints_problems(app)
        await pilot.press("p")
        await until(pilot, lambda: status(api, "o-1") == "paused", what="pause")
        await pilot.press("u")
        await until(pilot, lambda: status(api, "o-1") == "waiting", what="resume")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: api.get(f"{BASE}/o-1").json()["runNumber"] == 2, what="restart")
        await pilot.press("n")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        form.query_one("#field-params").value = '{"order": 7}'
        form.query_one("#field-id").value = "o-7"
        await pilot.press("ctrl+s")
        instance = await until(pilot, lambda: isinstance(app.screen, InstanceScreen) and app.screen, what="the instance")
        assert instance.instance_id == "o-7" and api.get(f"{BASE}/o-7").json()["params"] == {"order": 7}
        await until(pilot, lambda: "charged 7" in screen_text(app), what="its logs", timeout_s=20)
        assert not key_hints_problems(app)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: status(api, "o-7") == "terminated", what="terminate")

    drive(app, (80, 24), scenario)
