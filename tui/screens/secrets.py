"""Credentials and variables, by name: their values stay on the server."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import TabbedContent, TabPane

from tui.client import ApiError
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.tables import Table


class SecretsScreen(Section):
    SECTION = "secrets"
    REFRESH_S = 15.0

    class Loaded(Message):
        def __init__(self, credentials: list[dict[str, Any]], variables: list[dict[str, Any]]) -> None:
            super().__init__()
            self.credentials = credentials
            self.variables = variables

    def body(self) -> ComposeResult:
        with TabbedContent(id="secrets-tabs"):
            with TabPane("Credentials", id="tab-credentials"):
                yield Table("Name", "Description", "By", "Updated", id="credentials")
            with TabPane("Variables", id="tab-variables"):
                yield Table("Path", "Secret", "Description", "By", "Updated", id="variables")

    def on_mount(self) -> None:
        self.query_one("#credentials").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            credentials = await self.client.credentials()
            variables = await self.client.variables()
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(credentials, variables))

    @on(Loaded)
    def show_all(self, message: Loaded) -> None:
        self.query_one("#credentials", Table).refill(
            (c["id"], (c["name"], c.get("description") or "", c["createdBy"], show.ago(c["updatedAt"])))
            for c in message.credentials
        )
        self.query_one("#variables", Table).refill(
            (v["path"], (v["path"], Text("secret", style="yellow") if v["isSecret"] else Text("plain", style="dim"),
                         v.get("description") or "", v["updatedBy"], show.ago(v["updatedAt"])))
            for v in message.variables
        )
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-credentials").label = f"Credentials ({len(message.credentials)})"
        tabs.get_tab("tab-variables").label = f"Variables ({len(message.variables)})"

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.query_one("#variables" if event.pane.id == "tab-variables" else "#credentials").focus()
