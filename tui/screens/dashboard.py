"""Home: is the server well, what ran in the last hour, what keeps failing, what waits for a
person."""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, ClassVar

from rich.table import Table as RichTable
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.client import RUN_STATUSES, ApiError
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.tables import Table

HOUR_MS = 3_600_000


@dataclasses.dataclass
class Overview:
    health: dict[str, Any]
    version: str
    user: dict[str, Any]
    runs: list[dict[str, Any]]
    more: bool  # more runs in the hour than were read
    approvals: list[dict[str, Any]]


def failing(runs: list[dict[str, Any]]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(path, kind, failures, the latest failed run) of runnables that failed in `runs`, most
    failures first."""
    failed = [run for run in runs if run["status"] in ("FAILED", "TIMED_OUT") and run["kind"] != "task"]
    counts = collections.Counter((run["path"], run["kind"]) for run in failed)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for run in failed:  # newest first
        latest.setdefault((run["path"], run["kind"]), run)
    return [(path, kind, n, latest[(path, kind)]) for (path, kind), n in counts.most_common()]


class DashboardScreen(Section):
    SECTION = "home"
    REFRESH_S = 5.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Refresh"),
    ]

    class Loaded(Message):
        def __init__(self, overview: Overview) -> None:
            super().__init__()
            self.overview = overview

    def body(self) -> ComposeResult:
        with Grid(id="dashboard"):
            yield Static("…", id="health", classes="panel")
            yield Static("…", id="hour", classes="panel")
            failing_table = Table("Runnable", "Fails", "Last error", id="failing")
            failing_table.border_title = "Failing in the last hour"
            yield failing_table
            approvals = Table("Waiting for", "Flow", "Since", id="pending")
            approvals.border_title = "Pending approvals"
            yield approvals

    def on_mount(self) -> None:
        self.query_one("#health").border_title = "Server"
        self.query_one("#hour").border_title = "Runs in the last hour"

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            health = await self.client.health()
            version = await self.client.version()
            user = await self.client.whoami()
            runs, more = await self.client.runs_since(int(time.time() * 1000) - HOUR_MS)
            approvals = await self.client.approvals()
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(Overview(health, version, user, runs, more, approvals)))

    @on(Loaded)
    def show_overview(self, message: Loaded) -> None:
        overview = message.overview
        health = overview.health
        grid = RichTable.grid(padding=(0, 1))
        grid.add_column(style="dim")
        grid.add_column()
        ok = health["status"] == "ok" and health["ready"] == "ready"
        grid.add_row("status", Text(f"{'●' if ok else '▲'} {health['status']}, {health['ready']}",
                                    style="green" if ok else "bold red"))
        grid.add_row("database", str(health.get("database") or "?"))
        grid.add_row("answers in", f"{health['latencyMs']:.0f} ms")
        grid.add_row("server", f"{self.client.address}")
        grid.add_row("version", overview.version)
        role = overview.user.get("role") or ("admin" if overview.user.get("is_admin") else "")
        grid.add_row("signed in", f"{overview.user.get('username', '?')} ({role})")
        self.query_one("#health", Static).update(grid)

        counts = collections.Counter(run["status"] for run in overview.runs if run["kind"] != "task")
        total = sum(counts.values())
        widest = max(counts.values(), default=0) or 1
        hour = RichTable.grid(padding=(0, 1))
        hour.add_column()
        hour.add_column(justify="right")
        hour.add_column()
        room = max(6, self.query_one("#hour").content_size.width - 18)  # the bars take the panel's width
        for name in RUN_STATUSES:
            bar = "█" * max(1 if counts[name] else 0, round(room * counts[name] / widest))
            hour.add_row(show.status(name), str(counts[name]), Text(bar, style=show.STATUS_STYLE.get(name, "")))
        hour.add_row(Text("all", style="b"), Text(f"{total}{'+' if overview.more else ''}", style="b"), "")
        self.query_one("#hour", Static).update(hour)

        self.query_one("#failing", Table).refill(
            (f"{kind}:{path}", (path, str(n), show.error_text(run["error"])))
            for path, kind, n, run in failing(overview.runs)
        )
        self.query_one("#pending", Table).refill(
            (a["id"], (f"{a['task']}: {a['message']}", a["executionId"][:8], show.ago(a["createdAt"])))
            for a in overview.approvals
        )

    def action_refresh(self) -> None:
        self.reload()

    @on(DataTable.RowSelected, "#failing")
    def open_failing(self, event: DataTable.RowSelected) -> None:
        kind, _, path = str(event.row_key.value).partition(":")
        self.flowmill.show_runs(path=path, kind=kind, status="FAILED")

    @on(DataTable.RowSelected, "#pending")
    def open_approval(self, event: DataTable.RowSelected) -> None:
        self.flowmill.decide_approval(str(event.row_key.value))
