"""What a person does in the TUI, done against a real server: start runs from forms and
watch their logs live, decide approvals, cancel, retry and replay runs, turn triggers on and
off, filter and search runs, and the command palette."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, RichLog, Select

from tests.support import FlowmillServer
from tests.tui.conftest import Seeded, drive, until
from tui.screens.approvals import ApprovalScreen
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.widgets.tables import Table


def job(server: FlowmillServer, run_id: str) -> dict[str, Any]:
    with server.client(server.admin_token()) as api:
        return dict(api.get(f"/api/v1/jobs/{run_id}").json())


def logs(app: Any) -> list[str]:
    return [strip.text.rstrip() for strip in app.screen.query_one("#logs", RichLog).lines]


def pick(app: Any, table_id: str, key: str) -> None:
    table = app.screen.query_one(table_id, Table)
    table.move_cursor(row=table.get_row_index(key))


async def run_screen(pilot: Any, other_than: str | None = None) -> RunScreen:
    screen: RunScreen = await until(
        pilot, lambda: isinstance(pilot.app.screen, RunScreen) and pilot.app.screen.run_id != other_than
        and pilot.app.screen.run and pilot.app.screen, what="a run's screen")
    return screen


def test_a_run_started_from_its_form_shows_its_logs_live(make_app: Any, seeded: Seeded, server: FlowmillServer) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await pilot.press("2")
        await until(pilot, lambda: "f/tui/slow" in [k.value for k in app.screen.query_one("#scripts", Table).rows])
        pick(app, "#scripts", "f/tui/slow")
        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        ticks = form.query_one("#field-ticks", Input)
        assert ticks.value == "40"  # the default of main's argument
        await until(pilot, lambda: app.focused is ticks, what="the first field focused")
        await pilot.press("backspace", "backspace", "8")  # typed, as a person does
        assert ticks.value == "8"
        await pilot.press("ctrl+s")
        screen = await run_screen(pilot)
        await until(pilot, lambda: "tick 0" in logs(app), what="the first log line")
        # live: the first line is there while the run still runs
        assert job(server, screen.run_id)["status"] == "RUNNING"
        await until(pilot, lambda: screen.run and screen.run["status"] == "SUCCESS", timeout_s=20, what="the end")
        await until(pilot, lambda: "tick 7" in logs(app), what="the last line")
        assert logs(app).count("tick 0") == 1  # every line once
        assert job(server, screen.run_id)["args"] == {"ticks": 8}

    drive(app, (80, 24), scenario)


def test_a_form_says_what_is_wrong_beside_the_field(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        app.start_run("script", "f/tui/hello")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        await pilot.press("ctrl+s")  # name is required
        await until(pilot, lambda: str(form.query_one("#field-name-error").render()) == "required", what="required")
        form.query_one("#field-name", Input).value = "you"
        form.query_one("#field-times", Input).value = "three"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "whole number" in str(form.query_one("#field-times-error").render()), what="the type")
        assert isinstance(app.screen, FormScreen)  # nothing was started
        form.query_one("#field-times", Input).value = "3"
        form.query_one("#field-loud").value = True
        await pilot.press("ctrl+s")
        screen = await run_screen(pilot)
        await until(pilot, lambda: screen.run["status"] == "SUCCESS", what="the run")
        assert screen.run["args"] == {"name": "you", "times": 3, "loud": True}
        await until(pilot, lambda: "HELLO you 2" in logs(app), what="its logs")

    drive(app, (80, 24), scenario)


def test_a_flow_run_from_its_inputs_is_approved_from_the_tui(make_app: Any, seeded: Seeded,
                                                             server: FlowmillServer) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await pilot.press("3")
        await until(pilot, lambda: seeded["gated"] in [k.value for k in app.screen.query_one("#flows", Table).rows])
        pick(app, "#flows", seeded["gated"])
        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        assert [(f.name, f.type) for f in form.fields] == [("who", "string"), ("count", "integer")]
        form.query_one("#field-who", Input).value = "tui"
        form.query_one("#field-count", Input).value = "9"  # over its max: the server says so beside it
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "5" in str(form.query_one("#field-count-error").render()), what="the server's word")
        form.query_one("#field-count", Input).value = "3"
        await pilot.press("ctrl+s")
        screen = await run_screen(pilot)
        await until(pilot, lambda: screen.run["status"] == "WAITING", what="the gate")
        await until(pilot, lambda: "Hello tui x3" in " ".join(logs(app)), what="its log")
        await pilot.press("a")
        dialog = await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen, what="the approval")
        await pilot.press("ctrl+s")  # note is required
        await until(pilot, lambda: str(dialog.query_one("#field-note-error").render()) == "required", what="required")
        dialog.query_one("#field-note", Input).value = "ship it"
        dialog.query_one("#field-level", Select).value = "high"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.run["status"] == "SUCCESS", timeout_s=15, what="the flow's end")
        await until(pilot, lambda: "published: ship it" in " ".join(logs(app)), what="the value it was given")
        with server.client(server.admin_token()) as api:
            decided = api.get("/api/v1/approvals", params={"executionId": screen.run_id, "status": "APPROVED"}).json()
        assert decided[0]["values"] == {"note": "ship it", "level": "high"} and decided[0]["decidedBy"] == "admin"

    drive(app, (80, 24), scenario)


def test_an_approval_is_rejected_from_the_list(make_app: Any, seeded: Seeded, server: FlowmillServer) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await pilot.press("7")
        await until(pilot, lambda: app.screen.query_one("#approvals", Table).row_count, what="the pending approval")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the dialog")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: not app.screen.query_one("#approvals", Table).row_count, what="none pending")
        await until(pilot, lambda: job(server, seeded["waiting_flow"])["status"] == "FAILED", what="the flow failing")

    drive(app, (80, 24), scenario)


def test_a_failed_flow_is_replayed_and_retried(make_app: Any, seeded: Seeded, server: FlowmillServer) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        app.open_run(seeded["failed_flow"])
        first = await run_screen(pilot)
        await until(pilot, lambda: first.tasks, what="its tasks")
        await pilot.press("p")
        question = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="the question")
        assert "from task boom" in question.question  # the first task that did not succeed
        await pilot.press("y")
        replay = await run_screen(pilot, other_than=seeded["failed_flow"])
        assert replay.run["trigger"]["kind"] == "replay"
        await until(pilot, lambda: replay.run["status"] == "FAILED" and replay.tasks, what="the replay's end")
        ran = {t["key"]: t for t in replay.tasks}
        assert ran["boom"]["status"] == "FAILED" and "first" in ran  # earlier outputs kept
        # retry: the same execution goes on from its failed task
        await pilot.press("t")
        await until(pilot, lambda: job(server, replay.run_id)["attempt"] >= 2 or
                    job(server, replay.run_id)["status"] != "FAILED", what="the retry")
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == replay.run_id

    drive(app, (80, 24), scenario)


def test_a_failed_script_runs_again_and_a_running_one_is_cancelled(make_app: Any, seeded: Seeded,
                                                                  server: FlowmillServer) -> None:
    app = make_app()
    with server.client(server.admin_token()) as api:
        slow = api.post("/api/v1/jobs/run/p/f/tui/slow", json={"ticks": 200}).json()["id"]

    async def scenario(pilot: Any) -> None:
        app.open_run(seeded["broken_run"])
        await run_screen(pilot)
        app.screen.query_one("#run-tabs").active = "tab-result"
        await pilot.press("t")
        again = await run_screen(pilot, other_than=seeded["broken_run"])
        assert again.run["path"] == "f/tui/broken"
        await until(pilot, lambda: again.run["status"] == "FAILED", what="the second failure")
        app.open_run(slow)
        screen = await run_screen(pilot, other_than=again.run_id)
        await until(pilot, lambda: "tick 1" in logs(app), what="its logs")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: screen.run["status"] == "CANCELLED", what="the cancel")
        assert job(server, slow)["status"] == "CANCELLED"

    drive(app, (80, 24), scenario)


def test_a_trigger_is_turned_off_and_on(make_app: Any, seeded: Seeded, server: FlowmillServer) -> None:
    app = make_app()

    def enabled() -> bool:
        with server.client(server.admin_token()) as api:
            return bool(api.get(f"/api/v1/triggers/{seeded['schedule']}").json()["enabled"])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await until(pilot, lambda: app.screen.query_one("#triggers", Table).row_count == 2, what="the triggers")
        pick(app, "#triggers", seeded["schedule"])
        await pilot.press("e")
        await until(pilot, lambda: not enabled(), what="off")
        await until(pilot, lambda: "off" in str(app.screen.query_one("#triggers", Table).get_row(seeded["schedule"])[0]))
        await pilot.press("e")
        await until(pilot, enabled, what="on again")

    drive(app, (80, 24), scenario)
    with server.client(server.admin_token()) as api:
        trigger = api.get(f"/api/v1/triggers/{seeded['schedule']}").json()
    assert trigger["cron"] == "0 0 3 1 1 *" and trigger["args"] == {"name": "cron"}  # nothing else changed


def test_runs_are_filtered_and_searched(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    def shown() -> set[str]:
        return {str(k.value) for k in app.screen.query_one("#runs", Table).rows}

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await until(pilot, lambda: {seeded["ok_run"], seeded["broken_run"]} <= shown(), what="the runs")
        app.screen.query_one("#status", Select).value = "FAILED"
        await until(pilot, lambda: seeded["broken_run"] in shown() and seeded["ok_run"] not in shown(), what="failed")
        app.screen.query_one("#kind", Select).value = "flow"
        await until(pilot, lambda: seeded["failed_flow"] in shown() and seeded["broken_run"] not in shown(), what="flows")
        assert isinstance(app.screen, RunsScreen)
        app.screen.set_filters(path="f/tui/hello", trigger="api")
        await until(pilot, lambda: seeded["ok_run"] in shown() and seeded["broken_run"] not in shown(), what="a path")
        app.screen.set_filters()
        await pilot.press("slash")
        await pilot.press(*"broken")
        paths = lambda: {run["path"] for run in app.screen.runs if run["id"] in shown()}
        await until(pilot, lambda: paths() == {"f/tui/broken"}, what="the search")
        await pilot.press("enter")  # back to the table; enter again opens the run
        await pilot.press("enter")
        screen = await run_screen(pilot)
        assert screen.run["path"] == "f/tui/broken"

    drive(app, (80, 24), scenario)


def test_the_dashboard_leads_to_the_failing_runs(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await until(pilot, lambda: app.screen.query_one("#failing", Table).row_count, what="failing runnables")
        app.screen.query_one("#failing").focus()
        pick(app, "#failing", "script:f/tui/broken")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.runs, what="the runs")
        assert {run["path"] for run in app.screen.runs} == {"f/tui/broken"}
        assert {run["status"] for run in app.screen.runs} == {"FAILED"}

    drive(app, (80, 24), scenario)


def test_the_palette_starts_a_run(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        await pilot.press(*"run script f/tui/hello")
        await pilot.pause(0.5)
        await pilot.press("enter")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
        assert form.title_text == "Run script f/tui/hello"

    drive(app, (80, 24), scenario)
