"""The banner under the section bar: shown while the server does not answer (and while the
local server starts), hidden otherwise."""

from __future__ import annotations

from textual.widgets import Static


class ConnectionBanner(Static):
    """Follows the app's `banner` text: empty hides it."""

    def __init__(self) -> None:
        super().__init__("", id="banner")

    def on_mount(self) -> None:
        self.watch(self.app, "banner", self.show_banner, init=True)

    def show_banner(self, text: str) -> None:
        self.update(text)
        self.display = bool(text)
