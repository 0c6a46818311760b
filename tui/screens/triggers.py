"""Routes and triggers: what starts runs from outside. A trigger is turned on or off here;
a row opens the runs it started."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, TabbedContent, TabPane

from tui.client import ApiError
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.tables import Table


def runnable(item: dict[str, Any]) -> str:
    target = item.get("runnable")
    return f"{target['kind']} {target['path']}" if target else "-"


class TriggersScreen(Section):
    SECTION = "routes"
    REFRESH_S = 5.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "switch_trigger", "Enable/disable"),
        Binding("h", "history", "Runs"),
        Binding("tab", "app.focus_next", "Next", show=False),
    ]

    class Loaded(Message):
        def __init__(self, routes: list[dict[str, Any]], triggers: list[dict[str, Any]]) -> None:
            super().__init__()
            self.routes = routes
            self.triggers = triggers

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[dict[str, Any]] = []
        self.triggers: list[dict[str, Any]] = []

    def body(self) -> ComposeResult:
        with TabbedContent(id="routes-tabs", initial="tab-triggers"):
            with TabPane("Triggers", id="tab-triggers"):
                yield Table("On", "Kind", "Runnable", "When / key", "Next", "Last", id="triggers")
            with TabPane("Routes", id="tab-routes"):
                yield Table("Method", "Path", "Runnable", "Answer", "Auth", "Summary", id="routes")

    def on_mount(self) -> None:
        self.query_one("#triggers").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            routes = await self.client.routes()
            triggers = await self.client.triggers()
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(routes, triggers))

    @on(Loaded)
    def show_all(self, message: Loaded) -> None:
        self.routes, self.triggers = message.routes, message.triggers
        self.query_one("#routes", Table).refill(
            (r["id"], (r["method"], "/api/r/" + r["path"], runnable(r), r["requestType"], r["auth"]["kind"],
                       r.get("summary") or ""))
            for r in self.routes
        )
        self.query_one("#triggers", Table).refill(
            (t["id"], (Text("● on", style="green") if t["enabled"] else Text("○ off", style="dim"), t["kind"],
                       runnable(t), show.compact(self.when(t), 26), show.when(t.get("nextFireAt")) if t["enabled"] else "-",
                       show.ago(t.get("lastFireAt"))))
            for t in self.triggers
        )
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-triggers").label = f"Triggers ({len(self.triggers)})"
        tabs.get_tab("tab-routes").label = f"Routes ({len(self.routes)})"
        self.refresh_bindings()

    @staticmethod
    def when(trigger: dict[str, Any]) -> str:
        if trigger["kind"] == "schedule":
            return f"{trigger.get('cron', '')} {trigger.get('timezone', '')}".strip()
        if trigger["kind"] == "webhook":
            return f"key {trigger['key']}" if trigger.get("key") else "webhook"
        return trigger.get("summary") or ""

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.query_one("#routes" if event.pane.id == "tab-routes" else "#triggers").focus()
        self.refresh_bindings()

    def selected_trigger(self) -> dict[str, Any] | None:
        if self.query_one(TabbedContent).active != "tab-triggers":
            return None
        key = self.query_one("#triggers", Table).current_key()
        return next((t for t in self.triggers if t["id"] == key), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_trigger":
            return True if self.selected_trigger() is not None else None
        return True

    def action_switch_trigger(self) -> None:
        trigger = self.selected_trigger()
        if trigger is None:
            return
        turn_on = not trigger["enabled"]
        self.flowmill.act(lambda: self.client.set_enabled(trigger, turn_on),
                          f"{'Enabled' if turn_on else 'Disabled'} the {trigger['kind']} of {trigger['runnable']['path']}",
                          doing="changing the trigger")

    @on(DataTable.RowSelected)
    def action_history(self) -> None:
        if self.query_one(TabbedContent).active == "tab-triggers":
            key = self.query_one("#triggers", Table).current_key()
            item = next((t for t in self.triggers if t["id"] == key), None)
            kind = item["kind"] if item else None
        else:
            key = self.query_one("#routes", Table).current_key()
            item = next((r for r in self.routes if r["id"] == key), None)
            kind = "route"
        if item and item.get("runnable"):
            self.flowmill.show_runs(path=item["runnable"]["path"], trigger=kind)

    @on(DataTable.RowHighlighted)
    def highlighted(self) -> None:
        self.refresh_bindings()
