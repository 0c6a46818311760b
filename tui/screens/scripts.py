"""Scripts: the list, a script's source (read-only, highlighted) with what it takes, and a
run started from a form built from its input schema."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from tui.client import ApiError
from tui.screens.base import Detail, Section
from tui.widgets import show
from tui.widgets.form import fields_from_schema
from tui.widgets.tables import Table


class ScriptsScreen(Section):
    SECTION = "scripts"
    REFRESH_S = 10.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "view", "Source"),
        Binding("r", "run", "Run…"),
        Binding("h", "history", "Runs"),
        Binding("slash", "search", "Search"),
    ]

    class Loaded(Message):
        def __init__(self, scripts: list[dict[str, Any]]) -> None:
            super().__init__()
            self.scripts = scripts

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, Any]] = []

    def body(self) -> ComposeResult:
        yield Input(placeholder="search scripts (/)", id="search", compact=True, classes="search")
        yield Table("Path", "Summary", "Updated", "Version", id="scripts")

    def on_mount(self) -> None:
        self.query_one("#scripts").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            scripts = await self.client.scripts()
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(scripts))

    @on(Loaded)
    def show_scripts(self, message: Loaded) -> None:
        self.scripts = message.scripts
        self.show_rows()

    def show_rows(self) -> None:
        words = self.query_one("#search", Input).value.lower().split()
        table = self.query_one("#scripts", Table)
        table.refill(
            (s["path"], (s["path"], s.get("summary") or "", show.ago(s["updatedAt"]), s["hash"][:8]))
            for s in sorted(self.scripts, key=lambda s: s["path"])
            if all(w in f"{s['path']} {s.get('summary') or ''}".lower() for w in words)
        )
        table.border_title = f"Scripts: {table.row_count}"

    @on(Input.Changed, "#search")
    def searched(self) -> None:
        self.show_rows()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one("#scripts").focus()

    def action_search(self) -> None:
        self.query_one("#search").focus()

    def selected(self) -> str | None:
        return self.query_one("#scripts", Table).current_key()

    @on(DataTable.RowSelected, "#scripts")
    def action_view(self) -> None:
        path = self.selected()
        if path:
            self.app.push_screen(ScriptScreen(path))

    def action_run(self) -> None:
        path = self.selected()
        if path:
            self.flowmill.start_run("script", path)

    def action_history(self) -> None:
        path = self.selected()
        if path:
            self.flowmill.show_runs(path=path)


class ScriptScreen(Detail):
    """A script's latest version: what it takes, and its source, highlighted, read-only."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run", "Run…"),
        Binding("h", "history", "Runs"),
    ]

    class Loaded(Message):
        def __init__(self, script: dict[str, Any]) -> None:
            super().__init__()
            self.script = script

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.script: dict[str, Any] | None = None

    def body(self) -> ComposeResult:
        yield Static(self.path, id="source-header")
        with VerticalScroll(id="source-scroll"):
            yield Static("Loading…", id="source")

    def on_mount(self) -> None:
        self.query_one("#source-scroll").focus()
        self.watch(self.app, "theme", lambda _: self.show_source(), init=False)

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            script = await self.client.script(self.path)
        except ApiError as error:
            self.failed(error, f"reading {self.path}")
            return
        self.post_message(self.Loaded(script))

    @on(Loaded)
    def show_script(self, message: Loaded) -> None:
        self.script = message.script
        self.show_source()

    def show_source(self) -> None:
        script = self.script
        if script is None:
            return
        fields = fields_from_schema(script["schema"])
        takes = ", ".join(f"{f.name}{'*' if f.required else ''}: {f.type}" for f in fields) or "nothing"
        header = Text.assemble((script["path"], "b"), f"  version {script['hash'][:8]} by {script['createdBy']}, "
                               f"{show.ago(script['createdAt'])}", style="")
        header.append(f"\ntakes {takes}", style="dim")
        if script.get("summary"):
            header.append(f"\n{script['summary']}", style="italic")
        self.query_one("#source-header", Static).update(header)
        self.query_one("#source", Static).update(self.flowmill.code(script["content"], "python", line_numbers=True))

    def action_run(self) -> None:
        self.flowmill.start_run("script", self.path)

    def action_history(self) -> None:
        self.flowmill.show_runs(path=self.path)
