"""The audit log: who did what, when, and whether it was allowed; filtered by actor, action
and outcome."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Select

from tui.client import ApiError
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.tables import Table

PAGE = 100


class AuditScreen(Section):
    SECTION = "audit"
    REFRESH_S = 10.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filters", "Filter"),
        Binding("m", "more", "More"),
    ]

    class Loaded(Message):
        def __init__(self, entries: list[dict[str, Any]], cursor: str | None) -> None:
            super().__init__()
            self.entries = entries
            self.cursor = cursor

    def __init__(self) -> None:
        super().__init__()
        self.cursor: str | None = None
        self.wanted = PAGE

    def body(self) -> ComposeResult:
        with Horizontal(classes="filters"):
            yield Input(placeholder="actor", id="actor", compact=True)
            yield Input(placeholder="action, e.g. job.run", id="action", compact=True)
            yield Select([(o, o) for o in ("success", "denied", "rejected", "error")], prompt="outcome",
                         id="outcome", compact=True)
        yield Table("When", "Actor", "Action", "Outcome", "Target", id="audit")

    def on_mount(self) -> None:
        self.query_one("#audit").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        outcome = self.query_one("#outcome", Select).value
        filters = {"actor": self.query_one("#actor", Input).value.strip() or None,
                   "action": self.query_one("#action", Input).value.strip() or None,
                   "outcome": None if outcome is Select.NULL else str(outcome)}
        entries: list[dict[str, Any]] = []
        cursor = None
        try:
            while len(entries) < self.wanted:
                page = await self.client.audit(cursor=cursor, limit=min(200, self.wanted - len(entries)), **filters)
                entries += page.items
                cursor = page.cursor
                if cursor is None:
                    break
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(entries, cursor))

    @on(Loaded)
    def show_entries(self, message: Loaded) -> None:
        self.cursor = message.cursor
        table = self.query_one("#audit", Table)
        table.refill(
            (str(e["id"]), (show.when(e["at"]), e.get("actor") or "-", e["action"],
                            Text(f"{e['outcome']} {e['status']}", style="green" if e["outcome"] == "success" else "red"),
                            e["target"]))
            for e in message.entries
        )
        table.border_title = f"Audit: {table.row_count}{'+' if self.cursor else ''}"
        self.refresh_bindings()

    @on(Input.Submitted)
    @on(Select.Changed)
    def filters_changed(self) -> None:
        self.wanted = PAGE
        self.reload()
        if self.focused is not None and isinstance(self.focused, Input):
            self.query_one("#audit").focus()

    def action_filters(self) -> None:
        self.query_one("#actor").focus()

    def action_more(self) -> None:
        if self.cursor:
            self.wanted += PAGE
            self.reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "more":
            return True if self.cursor else None
        return True
