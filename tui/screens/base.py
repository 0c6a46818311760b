"""What every screen of the TUI has: the connection banner, the footer's key map, its data
reloaded by a worker while it is shown, and one way to take an API error."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer

from tui.client import ApiError, Disconnected, FlowmillClient, NotFound
from tui.widgets.banner import ConnectionBanner
from tui.widgets.nav import NavBar

if TYPE_CHECKING:
    from tui.app import FlowmillApp


class Page(Screen[None]):
    """A screen with the banner on top and the key map at the bottom. `reload` (a worker in
    each screen) fetches what it shows; it runs when the screen is shown and every `REFRESH_S`
    seconds while it stays shown and the server answers."""

    REFRESH_S: ClassVar[float | None] = None

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None

    @property
    def flowmill(self) -> FlowmillApp:
        return self.app  # type: ignore[return-value]

    @property
    def client(self) -> FlowmillClient:
        return self.flowmill.client

    def compose(self) -> ComposeResult:
        yield ConnectionBanner()
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        if not self.flowmill.booting:
            self.reload()
        if self.REFRESH_S is not None:
            if self._timer is None:
                self._timer = self.set_interval(self.REFRESH_S, self._tick)
            else:
                self._timer.resume()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def _tick(self) -> None:
        if not self.flowmill.offline and not self.flowmill.booting:
            self.reload()

    def reload(self) -> object:
        """Fetch what the screen shows (each screen's own worker)."""
        return None

    def reconnected(self) -> None:
        """The server answers again (or has just started): show what it holds now."""
        self.reload()

    def failed(self, error: ApiError, doing: str = "") -> None:
        """Take an API error: a lost server is the app's (the banner, then retries); a refusal
        is said in a notification."""
        if isinstance(error, Disconnected):
            self.flowmill.connection_lost(error)
            return
        prefix = f"{doing}: " if doing else ""
        self.notify(prefix + error.message, severity="error", timeout=8)

    @staticmethod
    def unavailable(error: ApiError) -> bool:
        return isinstance(error, NotFound)


class Detail(Page):
    """A screen opened from another (a run, a script's source): escape goes back to it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def action_back(self) -> None:
        self.dismiss(None)


class Section(Page):
    """A screen reached from the section bar (keys 1-9): the bar is on top of it."""

    SECTION: ClassVar[str] = ""

    def compose(self) -> ComposeResult:
        yield NavBar(self.SECTION)
        yield from super().compose()
