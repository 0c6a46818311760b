"""Every screen of the TUI renders from a real server at 80x24 and 200x50, with its key map
whole: no hint cut off, none on another, no footer that scrolls."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import RichLog, Static, Tree

from tests.tui.conftest import SIZES, Seeded, drive, key_hints_problems, screen_text, until
from tui.screens.approvals import ApprovalScreen
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.screens.flows import FlowScreen
from tui.screens.run import RunScreen
from tui.screens.scripts import ScriptScreen
from tui.widgets.tables import Table

SECTIONS = {  # key: (the screen's table or widget that shows it loaded, the rows it must show)
    "1": ("#failing", ["script:f/tui/broken", "flow:f/tui/failing"]),
    "2": ("#scripts", ["f/tui/hello", "f/tui/slow", "f/tui/broken"]),
    "3": ("#flows", None),
    "4": ("#instances", ["o-1"]),
    "5": ("#triggers", None),
    "6": ("#runs", None),
    "7": ("#approvals", None),
    "8": ("#credentials", None),
    "9": ("#audit", None),
}


def rows(app: Any, selector: str) -> list[str]:
    table = app.screen.query_one(selector, Table)
    return [str(key.value) for key in table.rows]


async def fits(pilot: Any, where: str) -> None:
    """The key map of the screen shown is whole, once it is laid out."""
    app = pilot.app
    await until(pilot, lambda: all(key.region.width for key in app.screen.query("FooterKey")), what="the footer's layout")
    problems = key_hints_problems(app)
    assert not problems, f"{where} at {app.size}: {problems}"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_section_renders_with_its_key_map_whole(make_app: Any, seeded: Seeded, size: tuple[int, int]) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        for key, (selector, expected) in SECTIONS.items():
            await pilot.press(key)
            await until(pilot, lambda s=selector, e=expected: rows(app, s) if e is None else set(e) <= set(rows(app, s)),
                        what=f"section {key} loading")
            await pilot.pause(0.1)
            await fits(pilot, f"section {key} ({type(app.screen).__name__})")
        # the dashboard's numbers
        await pilot.press("1")
        await until(pilot, lambda: "FAILED" in screen_text(app) and "ok, ready" in screen_text(app), what="the numbers")
        text = screen_text(app)
        assert "f/tui/broken" in text and "Publish for seed?" in text

    drive(app, size, scenario)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail_screens_and_dialogs_fit(make_app: Any, seeded: Seeded, size: tuple[int, int]) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        # a script's source, highlighted, and its run form
        await pilot.press("2")
        await until(pilot, lambda: "f/tui/hello" in rows(app, "#scripts"))
        table = app.screen.query_one("#scripts", Table)
        table.move_cursor(row=table.get_row_index("f/tui/hello"))
        await pilot.press("v")
        source = await until(pilot, lambda: isinstance(app.screen, ScriptScreen) and app.screen.script, what="source")
        assert source["path"] == "f/tui/hello"
        assert type(app.screen.query_one("#source", Static).content).__name__ == "Syntax"  # highlighted
        await fits(pilot, "a script's source")
        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the run form")
        assert [f.name for f in form.fields] == ["name", "times", "loud"]
        await fits(pilot, "the run form")
        await pilot.press("escape")
        await pilot.press("escape")
        # a flow's YAML
        await pilot.press("3")
        await until(pilot, lambda: seeded["gated"] in rows(app, "#flows"))
        table = app.screen.query_one("#flows", Table)
        table.move_cursor(row=table.get_row_index(seeded["gated"]))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FlowScreen) and app.screen.flow, what="the flow")
        await fits(pilot, "a flow's source")
        await pilot.press("escape")
        # a run: its tree, result, logs
        app.open_run(seeded["failed_flow"])
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tasks, what="the run")
        tree = app.screen.query_one("#tasks", Tree)
        labels = [str(node.label) for node in tree.root.children]
        assert any("first" in label for label in labels) and any("boom" in label and "FAILED" in label for label in labels)
        each = next(node for node in tree.root.children if "each" in str(node.label))
        assert [str(n.label) for n in each.children] == ["[0]", "[1]"]  # a loop's iterations, each with its task
        await until(pilot, lambda: len(app.screen.query_one("#logs", RichLog).lines) >= 3, what="the logs")
        await fits(pilot, "a failed flow run")
        for tab in ("tab-result", "tab-inputs", "tab-logs"):
            app.screen.query_one("#run-tabs").active = tab
            await pilot.pause()
            await fits(pilot, f"a run's {tab}")
        await pilot.press("p")  # replay asks first
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await fits(pilot, "a question")
        await pilot.press("n")
        await pilot.press("escape")
        # an approval's dialog
        await pilot.press("7")
        await until(pilot, lambda: rows(app, "#approvals"))
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the approval")
        await fits(pilot, "an approval")
        await pilot.press("escape")
        # the keys panel and the palette
        await pilot.press("f1")
        await until(pilot, lambda: app.screen.query("HelpPanel"), what="the keys")
        await pilot.press("f1")
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        await pilot.press("escape")

    drive(app, size, scenario)


def test_light_and_dark(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        assert app.current_theme.dark
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not app.current_theme.dark
        app.open_run(seeded["ok_run"])
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run, what="the run")
        await fits(pilot, "a run in the light theme")
        await pilot.press("ctrl+t")
        assert app.current_theme.dark

    drive(app, (80, 24), scenario)


def test_the_mouse_opens_sections_and_runs(make_app: Any, seeded: Seeded) -> None:
    app = make_app()

    async def scenario(pilot: Any) -> None:
        await until(pilot, lambda: "Runs" in screen_text(app).splitlines()[0], what="the section bar")
        bar = screen_text(app).splitlines()[0]
        await pilot.click("#nav", offset=(bar.index("Runs") + 1, 0))
        await until(pilot, lambda: app.current_mode == "runs", what="the runs section")
        await until(pilot, lambda: seeded["ok_run"] in rows(app, "#runs"), what="the runs")
        table = app.screen.query_one("#runs", Table)
        row = table.get_row_index(seeded["ok_run"])
        await pilot.click("#runs", offset=(4, row + 2 - int(table.scroll_y)), times=2)  # +2: the border, the header
        screen = await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen, what="the run")
        assert screen.run_id == seeded["ok_run"]

    drive(app, (80, 24), scenario)
