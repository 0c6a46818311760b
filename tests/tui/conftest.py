"""The terminal UI driven headless (Textual's `App.run_test()` pilot) against a real server.

The TUI is a client of the HTTP API, so its tests run against one backend: SQLite (the API's
own tests cover PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.support import FlowmillServer

SIZES = [(80, 24), (200, 50)]

HELLO = '''def main(name: str, times: int = 1, loud: bool = False):
    for i in range(times):
        print(("HELLO" if loud else "hello"), name, i)
    return {"greeting": "hello " + name, "times": times}
'''

SLOW = '''import time

def main(ticks: int = 40):
    for i in range(ticks):
        print("tick", i, flush=True)
        time.sleep(0.25)
    return ticks
'''

BROKEN = '''def main():
    raise ValueError("this script is broken")
'''

GATED = '''name: gated
namespace: tui
inputs:
  - {name: who, type: string, default: world}
  - {name: count, type: integer, default: 2, min: 1, max: 5}
tasks:
  - name: hello
    type: util.log
    properties: {message: "Hello {{ inputs.who }} x{{ inputs.count }}"}
  - name: gate
    type: flow.approval
    properties:
      message: "Publish for {{ inputs.who }}?"
      form:
        - {name: note, type: string, required: true}
        - {name: level, type: select, values: [low, high]}
  - name: done
    type: util.log
    properties: {message: "published: {{ outputs.gate.values.note }}"}
'''

FAILING = '''name: failing
namespace: tui
tasks:
  - name: first
    type: util.log
    properties: {message: "first ran"}
  - name: each
    type: flow.foreach
    properties:
      items: [1, 2]
      tasks:
        - {name: say, type: util.log, properties: {message: "item {{ item }}"}}
  - name: boom
    type: flow.fail
    properties: {message: "boom"}
'''

ORDERS = '''from flowmill import workflow, step, wait_for_event

@workflow(name="orders.fulfil")
def main(order: int = 1):
    step("charge", lambda: print("charged", order) or {"charged": order})
    wait_for_event("shipped")
    return "fulfilled"
'''


@pytest.fixture(scope="session")
def backend() -> str:
    return "sqlite"


class Seeded(dict):  # type: ignore[type-arg]
    """What the seed made: ids by name."""


@pytest.fixture(scope="module")
def seeded(server: FlowmillServer) -> Seeded:
    """Scripts, flows, triggers, a route, a credential and variables, and runs of each kind."""
    made = Seeded()
    with server.client(server.admin_token()) as api:
        for path, content in (("f/tui/hello", HELLO), ("f/tui/slow", SLOW), ("f/tui/broken", BROKEN),
                              ("f/tui/orders", ORDERS)):
            assert api.post("/api/v1/scripts", json={"path": path, "content": content,
                                                     "summary": path.rsplit("/", 1)[-1]}).status_code == 201
        for name, text in (("gated", GATED), ("failing", FAILING)):
            answer = api.post("/api/v1/flows", json={"yamlContent": text})
            assert answer.status_code == 201, answer.text
            made[name] = answer.json()["id"]
        made["schedule"] = api.post("/api/v1/triggers", json={
            "kind": "schedule", "cron": "0 0 3 1 1 *", "timezone": "UTC",
            "runnable": {"kind": "script", "path": "f/tui/hello"}, "args": {"name": "cron"}}).json()["id"]
        made["webhook"] = api.post("/api/v1/triggers", json={
            "kind": "webhook", "runnable": {"kind": "flow", "path": "f/tui/gated"}}).json()["id"]
        assert api.post("/api/v1/routes", json={"path": "tui/hello/:name", "method": "GET", "requestType": "sync",
                                                "runnable": {"kind": "script", "path": "f/tui/hello"}}).status_code == 201
        assert api.post("/api/v1/credentials", json={"name": "TUI_TOKEN", "value": "very-secret-value"}).status_code == 201
        assert api.post("/api/v1/variables", json={"path": "f/tui/plain", "value": "visible"}).status_code == 201
        assert api.post("/api/v1/variables", json={"path": "f/tui/hidden", "value": "not-for-eyes",
                                                   "isSecret": True}).status_code == 201
        made["ok_run"] = api.post("/api/v1/jobs/run/p/f/tui/hello", json={"name": "seed", "times": 2}).json()["id"]
        made["broken_run"] = api.post("/api/v1/jobs/run/p/f/tui/broken", json={}).json()["id"]
        made["failed_flow"] = api.post(f"/api/v1/flows/{made['failing']}/execute", json={}).json()["jobId"]
        made["waiting_flow"] = api.post(f"/api/v1/flows/{made['gated']}/execute",
                                        json={"inputs": {"who": "seed"}}).json()["jobId"]
        made["instance"] = api.post("/api/workflows/orders.fulfil/instances",
                                    json={"id": "o-1", "params": {"order": 1}}).json()["id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = [api.get(f"/api/v1/jobs/{made[k]}").json()["status"]
                        for k in ("ok_run", "broken_run", "failed_flow", "waiting_flow", "instance")]
            if statuses == ["SUCCESS", "FAILED", "FAILED", "WAITING", "WAITING"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the seeded runs did not settle: {statuses}")
    return made


async def until(pilot: Any, probe: Callable[[], Any], timeout_s: float = 10, what: str = "the condition") -> Any:
    """Let the app run until `probe()` is truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except Exception:  # noqa: BLE001 (a widget not mounted yet, a screen between two states)
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        await pilot.pause(0.05)


def drive(app: Any, size: tuple[int, int], scenario: Callable[[Any], Awaitable[None]]) -> None:
    """Run the app headless at `size` and play `scenario` with its pilot; any exception the app
    raised fails the test."""
    async def play() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)
            await pilot.pause()
    asyncio.run(play())
    assert app.return_code in (None, 0), f"the app ended with {app.return_code}"


def key_hints_problems(app: Any) -> list[str]:
    """What is wrong with the key map on screen: a hint past the edge, two hints on top of
    each other, a footer that has to scroll, a section bar wider than the screen."""
    from textual.widgets import Footer

    problems = []
    screen = app.screen
    width = app.size.width
    for footer in screen.query(Footer):
        if footer.virtual_size.width > footer.size.width:
            problems.append(f"the footer needs {footer.virtual_size.width} cells, it has {footer.size.width}")
        keys = [key for key in footer.query("FooterKey") if key.display]
        for key in keys:
            if key.region.right > width or key.region.width == 0:
                problems.append(f"the hint {key.key!r} is cut off ({key.region})")
        for i, one in enumerate(keys):
            for other in keys[i + 1:]:
                if one.region.overlaps(other.region):
                    problems.append(f"the hints {one.key!r} and {other.key!r} overlap")
    for nav in screen.query("#nav"):
        if nav.render().cell_length > width:  # type: ignore[attr-defined]
            problems.append("the section bar is wider than the screen")
    for dialog in screen.query(".dialog"):
        if not screen.region.contains_region(dialog.region):
            problems.append(f"the dialog {dialog.id} does not fit on the screen ({dialog.region})")
    return problems


@pytest.fixture
def make_app(server: FlowmillServer) -> Iterator[Callable[..., Any]]:
    from tui.app import FlowmillApp
    from tui.client import FlowmillClient

    def make(**kwargs: Any) -> FlowmillApp:
        return FlowmillApp(FlowmillClient(server.url, server.admin_token()), **kwargs)

    yield make


def screen_text(app: Any) -> str:
    """What the screen shows, as text (a line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)
