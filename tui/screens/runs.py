"""Runs: every run of the workspace, newest first, filtered by status, kind, path and trigger
(by the server) and searched (here, in what was read)."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Input, Select

from tui.client import FINAL, RUN_KINDS, RUN_STATUSES, TRIGGER_KINDS, ApiError
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.tables import Table

PAGE = 100
MOST = 1000  # runs held at once; "more" reads further pages up to this


def matches(run: dict[str, Any], words: list[str]) -> bool:
    """Whether every word of a search is in the run's id, path, status, kind, trigger, author
    or error."""
    haystack = " ".join([run["id"], run["path"], run["status"], run["kind"], run["trigger"]["kind"],
                         run["trigger"].get("detail") or "", run["createdBy"], show.error_text(run["error"])]).lower()
    return all(word in haystack for word in words)


class RunsScreen(Section):
    SECTION = "runs"
    REFRESH_S = 2.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search"),
        Binding("f", "filters", "Filter"),
        Binding("c", "cancel", "Cancel run"),
        Binding("t", "retry", "Retry"),
        Binding("m", "more", "More"),
        Binding("x", "clear", "Clear filters", show=False),
    ]

    class Loaded(Message):
        def __init__(self, runs: list[dict[str, Any]], cursor: str | None) -> None:
            super().__init__()
            self.runs = runs
            self.cursor = cursor

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict[str, Any]] = []
        self.cursor: str | None = None
        self.wanted = PAGE
        self._ready = False
        self._pending: dict[str, str | None] | None = None  # filters asked for before the screen was up

    def body(self) -> ComposeResult:
        with Horizontal(id="run-filters", classes="filters"):
            yield Select([(s, s) for s in RUN_STATUSES], prompt="status", id="status", compact=True)
            yield Select([(k, k) for k in RUN_KINDS], prompt="kind", id="kind", compact=True)
            yield Select([(t, t) for t in TRIGGER_KINDS], prompt="trigger", id="trigger", compact=True)
            yield Input(placeholder="path", id="path", compact=True)
            yield Input(placeholder="search", id="search", compact=True)
        yield Table("Status", "Kind", "Path", "Trigger", "Started", "Took", "By", "Run", id="runs")

    def on_mount(self) -> None:
        self.query_one("#runs").focus()
        self._ready = True
        if self._pending is not None:
            self.set_filters(**self._pending)

    def filters(self) -> dict[str, str | None]:
        def chosen(name: str) -> str | None:
            value = self.query_one(f"#{name}", Select).value
            return None if value is Select.NULL else str(value)

        return {"status": chosen("status"), "kind": chosen("kind"), "trigger": chosen("trigger"),
                "path": self.query_one("#path", Input).value.strip() or None}

    def set_filters(self, **values: str | None) -> None:
        """Show the runs matching `values` (status, kind, trigger, path); the others cleared."""
        if not self._ready:
            self._pending = values
            return
        with self.prevent(Select.Changed, Input.Changed):
            for name in ("status", "kind", "trigger"):
                select = self.query_one(f"#{name}", Select)
                select.value = values.get(name) or Select.NULL
            self.query_one("#path", Input).value = values.get("path") or ""
        self.wanted = PAGE
        self.reload()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        filters = self.filters()
        runs: list[dict[str, Any]] = []
        cursor = None
        try:
            while len(runs) < self.wanted:
                page = await self.client.runs(cursor=cursor, limit=min(200, self.wanted - len(runs)), **filters)
                runs += page.items
                cursor = page.cursor
                if cursor is None:
                    break
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(runs, cursor))

    @on(Loaded)
    def show_runs(self, message: Loaded) -> None:
        self.runs, self.cursor = message.runs, message.cursor
        self.show_rows()

    def show_rows(self) -> None:
        words = self.query_one("#search", Input).value.lower().split()
        table = self.query_one("#runs", Table)
        table.refill(
            (run["id"], (show.status(run["status"], icon=True), run["kind"], run["path"], run["trigger"]["kind"],
                         show.when(run["startedAt"] or run["createdAt"]), show.duration(run["durationMs"]),
                         run["createdBy"], show.short_id(run["id"])))
            for run in self.runs if matches(run, words)
        )
        shown = table.row_count
        more = "+" if self.cursor else ""
        table.border_title = f"Runs: {shown} of {len(self.runs)}{more}" if words else f"Runs: {len(self.runs)}{more}"

    @on(Select.Changed)
    @on(Input.Submitted, "#path")
    def filters_changed(self) -> None:
        self.wanted = PAGE
        self.reload()

    @on(Input.Changed, "#path")
    def path_typed(self, event: Input.Changed) -> None:
        if not event.value:
            self.filters_changed()

    @on(Input.Changed, "#search")
    def search_typed(self) -> None:
        self.show_rows()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one("#runs").focus()

    @on(DataTable.RowSelected, "#runs")
    def open_run(self, event: DataTable.RowSelected) -> None:
        self.flowmill.open_run(str(event.row_key.value))

    def selected(self) -> dict[str, Any] | None:
        key = self.query_one("#runs", Table).current_key()
        return next((run for run in self.runs if run["id"] == key), None)

    def action_search(self) -> None:
        self.query_one("#search").focus()

    def action_filters(self) -> None:
        self.query_one("#status").focus()

    def action_clear(self) -> None:
        self.query_one("#search", Input).value = ""
        self.set_filters()

    def action_more(self) -> None:
        if self.cursor and self.wanted < MOST:
            self.wanted = min(MOST, self.wanted + PAGE)
            self.reload()

    def action_cancel(self) -> None:
        run = self.selected()
        if run is not None:
            self.flowmill.cancel_run(run)

    def action_retry(self) -> None:
        run = self.selected()
        if run is not None:
            self.flowmill.retry_run(run)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.selected() if action in ("cancel", "retry") else None
        if action == "cancel":
            return None if run is None or run["status"] in FINAL else True
        if action == "retry":
            return None if run is None or run["status"] not in FINAL or run["kind"] == "task" else True
        if action == "more":
            return True if self.cursor else None
        return True

    @on(DataTable.RowHighlighted, "#runs")
    def highlighted(self) -> None:
        self.refresh_bindings()
