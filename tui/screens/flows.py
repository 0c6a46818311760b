"""Flows: the list, a flow's YAML (read-only, highlighted), and an execution started from a
form built from its inputs."""

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
from tui.widgets.form import fields_from_flow
from tui.widgets.tables import Table


class FlowsScreen(Section):
    SECTION = "flows"
    REFRESH_S = 10.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "view", "Source"),
        Binding("r", "run", "Run…"),
        Binding("h", "history", "Runs"),
        Binding("slash", "search", "Search"),
    ]

    class Loaded(Message):
        def __init__(self, flows: list[dict[str, Any]]) -> None:
            super().__init__()
            self.flows = flows

    def __init__(self) -> None:
        super().__init__()
        self.flows: list[dict[str, Any]] = []

    def body(self) -> ComposeResult:
        yield Input(placeholder="search flows (/)", id="search", compact=True, classes="search")
        yield Table("Path", "Description", "Rev", "Updated", id="flows")

    def on_mount(self) -> None:
        self.query_one("#flows").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            flows = await self.client.flows()
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(flows))

    @on(Loaded)
    def show_flows(self, message: Loaded) -> None:
        self.flows = message.flows
        self.show_rows()

    def show_rows(self) -> None:
        words = self.query_one("#search", Input).value.lower().split()
        table = self.query_one("#flows", Table)
        table.refill(
            (f["id"], (f["path"], f.get("description") or "", str(f["revision"]), show.ago(f["updatedAt"])))
            for f in sorted(self.flows, key=lambda f: f["path"])
            if all(w in f"{f['path']} {f.get('description') or ''}".lower() for w in words)
        )
        table.border_title = f"Flows: {table.row_count}"

    @on(Input.Changed, "#search")
    def searched(self) -> None:
        self.show_rows()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one("#flows").focus()

    def action_search(self) -> None:
        self.query_one("#search").focus()

    def selected(self) -> dict[str, Any] | None:
        key = self.query_one("#flows", Table).current_key()
        return next((f for f in self.flows if f["id"] == key), None)

    @on(DataTable.RowSelected, "#flows")
    def action_view(self) -> None:
        flow = self.selected()
        if flow:
            self.app.push_screen(FlowScreen(flow["id"]))

    def action_run(self) -> None:
        flow = self.selected()
        if flow:
            self.flowmill.start_run("flow", flow["id"])

    def action_history(self) -> None:
        flow = self.selected()
        if flow:
            self.flowmill.show_runs(path=flow["path"], kind="flow")


class FlowScreen(Detail):
    """A flow's current revision: its inputs and its YAML."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run", "Run…"),
        Binding("h", "history", "Runs"),
    ]

    class Loaded(Message):
        def __init__(self, flow: dict[str, Any]) -> None:
            super().__init__()
            self.flow = flow

    def __init__(self, flow_id: str) -> None:
        super().__init__()
        self.flow_id = flow_id
        self.flow: dict[str, Any] | None = None

    def body(self) -> ComposeResult:
        yield Static("", id="source-header")
        with VerticalScroll(id="source-scroll"):
            yield Static("Loading…", id="source")

    def on_mount(self) -> None:
        self.query_one("#source-scroll").focus()
        self.watch(self.app, "theme", lambda _: self.show_source(), init=False)

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            flow = await self.client.flow(self.flow_id)
        except ApiError as error:
            self.failed(error, "reading the flow")
            return
        self.post_message(self.Loaded(flow))

    @on(Loaded)
    def show_flow(self, message: Loaded) -> None:
        self.flow = message.flow
        self.show_source()

    def show_source(self) -> None:
        flow = self.flow
        if flow is None:
            return
        fields = fields_from_flow(flow["yamlContent"])
        takes = ", ".join(f"{f.name}{'*' if f.required else ''}: {f.type}" for f in fields) or "nothing"
        header = Text.assemble((flow["path"], "b"), f"  revision {flow['revision']} by {flow['updatedBy']}, "
                               f"{show.ago(flow['updatedAt'])}")
        header.append(f"\ntakes {takes}", style="dim")
        self.query_one("#source-header", Static).update(header)
        self.query_one("#source", Static).update(self.flowmill.code(flow["yamlContent"], "yaml", line_numbers=True))

    def action_run(self) -> None:
        self.flowmill.start_run("flow", self.flow_id)

    def action_history(self) -> None:
        if self.flow:
            self.flowmill.show_runs(path=self.flow["path"], kind="flow")
