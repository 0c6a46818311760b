"""The bar of sections at the top of every section screen: a key and a name each, clickable."""

from __future__ import annotations

from textual import events
from textual.content import Content
from textual.widgets import Static

# (mode, key, name, short name): the short names are used when the long ones do not fit.
SECTIONS = (
    ("home", "1", "Home", "Home"),
    ("scripts", "2", "Scripts", "Scripts"),
    ("flows", "3", "Flows", "Flows"),
    ("workflows", "4", "Workflows", "Wflows"),
    ("routes", "5", "Routes & triggers", "Routes"),
    ("runs", "6", "Runs", "Runs"),
    ("approvals", "7", "Approvals", "Approve"),
    ("secrets", "8", "Secrets", "Secrets"),
    ("audit", "9", "Audit", "Audit"),
)


def render_sections(active: str, width: int) -> Content:
    """The bar for a screen `width` cells wide: long names if they fit, else short ones."""
    for long in (True, False):
        parts = []
        for mode, key, name, short in SECTIONS:
            label = name if long else short
            style = "reverse b" if mode == active else ""
            part = f"[@click=app.switch_section('{mode}')][b $accent]{key}[/] [{style}]{label}[/][/]" if style else \
                f"[@click=app.switch_section('{mode}')][b $accent]{key}[/] {label}[/]"
            parts.append(part)
        content = Content.from_markup(" " + "  ".join(parts))
        if content.cell_length <= width or not long:
            if content.cell_length > width:  # narrower still: one space between sections
                content = Content.from_markup(" " + " ".join(parts))
            return content
    raise AssertionError("unreachable")


class NavBar(Static):
    """Sections by key (1-9); the active one reversed."""

    def __init__(self, active: str) -> None:
        super().__init__(id="nav")
        self.active = active

    def on_mount(self) -> None:
        self.update(render_sections(self.active, self.size.width or 80))

    def on_resize(self, event: events.Resize) -> None:
        self.update(render_sections(self.active, event.size.width))
