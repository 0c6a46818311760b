"""Workflow instances, against the instances API as DESIGN §4.4 writes it (answered here by an in-memory
stand-in of the server's /api/workflows): list, start, pause, resume,
restart, terminate."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.tui.conftest import drive, key_hints_problems, screen_text, until
from tui.app import FlowmillApp
from tui.client import FlowmillClient
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.screens.workflows import InstanceScreen, WorkflowsScreen
from tui.widgets.tables import Table

BASE = "/api/workflows"


class InstancesApi:
    """What §4.4 answers, in memory; every call it took, in `calls`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.instances: dict[str, dict[str, Any]] = {
            "o-1": {"id": "o-1", "status": "running", "runNumber": 1, "params": {"order": 1},
                    "currentStep": {"name": "charge", "attempts": 1}, "createdAt": 1, "updatedAt": 2},
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        self.calls.append((method, path, body))
        if path == BASE:
            return httpx.Response(200, json=["orders.fulfil"])
        if path == f"{BASE}/orders.fulfil/instances" and method == "GET":
            return httpx.Response(200, json={"items": list(self.instances.values()), "nextCursor": None})
        if path == f"{BASE}/orders.fulfil/instances" and method == "POST":
            made = {"id": body.get("id") or "o-2", "status": "queued", "runNumber": 1, "params": body["params"]}
            self.instances[made["id"]] = made
            return httpx.Response(201, json=made)
        if path.startswith(f"{BASE}/orders.fulfil/instances/"):
            rest = path.removeprefix(f"{BASE}/orders.fulfil/instances/").split("/")
            instance = self.instances[rest[0]]
            if len(rest) == 1:
                return httpx.Response(200, json=instance)
            if rest[1] == "history":
                return httpx.Response(200, json={"steps": [{"name": "charge", "status": "complete", "durationMs": 12}],
                                                 "events": [{"type": "paid"}], "logs": [{"message": "charged 1"}]})
            instance["status"] = {"pause": "paused", "resume": "running", "restart": "queued",
                                  "terminate": "terminated"}[rest[1]]
            if rest[1] == "restart":
                instance["runNumber"] += 1
            return httpx.Response(200, json=instance)
        if path in ("/healthz", "/readyz"):
            return httpx.Response(200, json={"status": "ok" if path == "/healthz" else "ready", "database": "sqlite"})
        if path == "/api/users/whoami":
            return httpx.Response(200, json={"username": "admin", "role": "admin"})
        if path == "/api/version":
            return httpx.Response(200, text="Flowmill v0")
        if path == "/api/v1/jobs":
            return httpx.Response(200, json={"items": [], "nextCursor": None})
        if path == "/api/v1/approvals":
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such route"}})


def test_instances_are_listed_started_and_managed() -> None:
    api = InstancesApi()
    app = FlowmillApp(FlowmillClient("http://flowmill.test", "token", transport=httpx.MockTransport(api)))

    def posted(action: str) -> bool:
        return any(m == "POST" and p.endswith(f"/{action}") for m, p, _ in api.calls)

    async def scenario(pilot: Any) -> None:
        await pilot.press("4")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen) and
                             app.screen.query_one("#instances", Table).row_count and app.screen, what="the instances")
        assert "orders.fulfil" in screen_text(app) and "charge" in screen_text(app)
        assert not key_hints_problems(app)
        await pilot.press("p")
        await until(pilot, lambda: posted("pause"), what="pause")
        await pilot.press("u")
        await until(pilot, lambda: posted("resume"), what="resume")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: posted("restart"), what="restart")
        assert api.instances["o-1"]["runNumber"] == 2
        await pilot.press("n")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        form.query_one("#field-params").value = '{"order": 7}'
        form.query_one("#field-id").value = "o-7"
        await pilot.press("ctrl+s")
        instance = await until(pilot, lambda: isinstance(app.screen, InstanceScreen) and app.screen, what="the instance")
        assert instance.instance_id == "o-7" and api.instances["o-7"]["params"] == {"order": 7}
        await until(pilot, lambda: "charged 1" in screen_text(app), what="its logs")
        assert not key_hints_problems(app)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: api.instances["o-7"]["status"] == "terminated", what="terminate")

    drive(app, (80, 24), scenario)
