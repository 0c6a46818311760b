"""The Flowmill terminal UI: one section per thing Flowmill holds (keys 1-9), a screen per
run, dialogs for what starts or decides something; all of it a client of the HTTP API.

The app owns what every screen shares: the client, whether the server answers (the banner and
the reconnection with backoff), the theme, and the actions that more than one screen offers
(open, cancel, retry or replay a run; start a run from a form; decide an approval).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

from rich.syntax import Syntax
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from tui.client import ApiError, Disconnected, FlowmillClient, NotFound, Unauthorized
from tui.commands import RunnablesProvider
from tui.screens.approvals import ApprovalScreen, ApprovalsScreen
from tui.screens.audit import AuditScreen
from tui.screens.base import Page
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import ConfirmScreen, FormScreen, LoginScreen, NoticeScreen
from tui.screens.flows import FlowsScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.screens.scripts import ScriptsScreen
from tui.screens.secrets import SecretsScreen
from tui.screens.triggers import TriggersScreen
from tui.screens.workflows import WorkflowsScreen
from tui.widgets.form import fields_from_flow, fields_from_schema
from tui.widgets.nav import SECTIONS

# What starts the TUI may still be getting the server ready (the local one starting, the admin
# signing in): it is given the app, and returns a text to show once, if any.
Boot = Callable[["FlowmillApp"], Awaitable["Notice | None"]]
Notice = tuple[str, str]  # (title, text)

LIGHT, DARK = "textual-light", "textual-dark"


class FlowmillApp(App[None]):
    CSS_PATH = "flowmill.tcss"
    TITLE = "Flowmill"
    MODES: ClassVar[dict[str, Any]] = {
        "home": DashboardScreen, "scripts": ScriptsScreen, "flows": FlowsScreen, "workflows": WorkflowsScreen,
        "routes": TriggersScreen, "runs": RunsScreen, "approvals": ApprovalsScreen, "secrets": SecretsScreen,
        "audit": AuditScreen,
    }
    DEFAULT_MODE = "home"
    COMMANDS = App.COMMANDS | {RunnablesProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"switch_section('{mode}')", name, show=False) for mode, key, name, _ in SECTIONS),
        Binding("f1", "toggle_keys", "Keys"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    banner = reactive("")  # said under the section bar while not empty
    offline = reactive(False)  # the server does not answer; the app is probing it
    booting = reactive(False)  # the server is being started or signed in to

    def __init__(self, client: FlowmillClient, *, boot: Boot | None = None, theme: str = DARK) -> None:
        super().__init__()
        self.client = client
        self.boot = boot
        self.theme = theme
        self.retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8)  # then every 8 s

    def on_mount(self) -> None:
        self.booting = self.boot is not None
        self.start()

    async def on_unmount(self) -> None:
        await self.client.close()

    # -- connection ---------------------------------------------------------------------------------

    @work(exclusive=True, group="connection")
    async def start(self) -> None:
        notice = None
        if self.boot is not None:
            self.banner = "Starting the local Flowmill server…"
            try:
                notice = await self.boot(self)
            except ApiError as error:
                self.banner = f"⚠ {error.message}"
                self.booting = False
                self.connection_lost(Disconnected(error.message), quiet=True)
                return
            finally:
                self.booting = False
            self.banner = ""
        if await self.check_signed_in():
            self.current_page_reconnected()
        if notice is not None:
            self.push_screen(NoticeScreen(*notice))

    async def check_signed_in(self) -> bool:
        """Whether the server takes our token; if not, ask to sign in (the page reloads after)."""
        try:
            await self.client.whoami()
        except Unauthorized as refused:
            self.push_screen(LoginScreen(self.client.address, refused.message), self._signed_in)
            return False
        except Disconnected as error:
            self.connection_lost(error)
            return False
        except ApiError:
            pass  # answering: the pages will say what is wrong
        return True

    def _signed_in(self, ok: bool | None) -> None:
        if ok:
            self.current_page_reconnected()

    def connection_lost(self, error: Disconnected, quiet: bool = False) -> None:
        """The server did not answer: say so, and probe it with backoff until it does."""
        if self.booting:
            return
        if not self.offline:
            self.offline = True
            if not quiet:
                self.banner = f"⚠ Lost the server: {error.message}. Retrying…"
            self.reconnect()

    @work(exclusive=True, group="reconnect")
    async def reconnect(self) -> None:
        attempt = 0
        while True:
            delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self.client.health()
            except Disconnected as error:
                self.banner = (f"⚠ No answer from {self.client.address} ({error.message}); "
                               f"retrying every {self.retry_delays[min(attempt, len(self.retry_delays) - 1)]:g} s")
                continue
            except ApiError:
                pass  # it answers: that is all this waits for
            break
        self.offline = False
        self.banner = ""
        self.notify(f"Connected to {self.client.address} again")
        if await self.check_signed_in():
            self.current_page_reconnected()

    def current_page_reconnected(self) -> None:
        if isinstance(self.screen, Page):
            self.screen.reconnected()
        for screen in self.screen_stack:  # pages under a dialog reload too
            if isinstance(screen, Page) and screen is not self.screen:
                screen.reconnected()

    # -- look ---------------------------------------------------------------------------------------

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def code(self, text: str, lexer: str, line_numbers: bool = False) -> Syntax:
        """Source or JSON highlighted for the current theme."""
        return Syntax(text, lexer, theme="monokai" if self.current_theme.dark else "friendly", line_numbers=line_numbers,
                      word_wrap=not line_numbers, background_color="default")

    @property
    def code_theme(self) -> str:
        return "monokai" if self.current_theme.dark else "friendly"

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, key, name, _ in SECTIONS:
            yield SystemCommand(f"Go to {name}", f"the {name.lower()} section (key {key})",
                                lambda mode=mode: self.action_switch_section(mode))
        yield SystemCommand("Light or dark", "switch between the light and the dark theme (ctrl+t)",
                            self.action_toggle_theme)

    # -- going places -------------------------------------------------------------------------------

    def action_switch_section(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)
        else:  # the section itself, from a run opened in it
            while len(self.screen_stack) > 1 and not isinstance(self.screen, self.MODES[mode]):
                self.pop_screen()

    def open_run(self, run_id: str, replace: bool = False) -> None:
        if replace and isinstance(self.screen, RunScreen):
            self.switch_screen(RunScreen(run_id))
        else:
            self.push_screen(RunScreen(run_id))

    def show_runs(self, **filters: str | None) -> None:
        """The runs section, filtered (status, kind, path, trigger)."""
        self.action_switch_section("runs")
        screen = self.screen
        if isinstance(screen, RunsScreen):
            screen.set_filters(**filters)

    # -- actions of several screens -----------------------------------------------------------------

    @work(group="actions")
    async def act(self, call: Callable[[], Awaitable[Any]], done: str | None,
                  then: Callable[[Any], None] | None = None, doing: str = "") -> None:
        """Make a call, say it was done (or what went wrong), then `then` with its answer."""
        try:
            answer = await call()
        except ApiError as error:
            if isinstance(error, Disconnected):
                self.connection_lost(error)
            else:
                self.notify(f"{doing}: {error.message}" if doing else error.message, severity="error", timeout=8)
            return
        if done:
            self.notify(done)
        if then is not None:
            then(answer)
        if isinstance(self.screen, Page):
            self.screen.reload()

    def cancel_run(self, run: dict[str, Any]) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self.act(lambda: self.client.cancel(run), f"Cancelled the run of {run['path']}", doing="cancelling")

        self.push_screen(ConfirmScreen(f"Cancel the run of {run['path']} ({run['status']})?"), confirmed)

    def retry_run(self, run: dict[str, Any], on_same: Callable[[], None] | None = None) -> None:
        """A flow's execution goes on from its failed task (the same run); anything else runs again."""
        def opened(run_id: str) -> None:
            if run_id == run["id"] and on_same is not None:
                on_same()
            elif run_id != run["id"]:
                self.open_run(run_id, replace=True)

        what = "Retry" if run["kind"] == "flow" else "Run again"
        self.act(lambda: self.client.retry(run), f"{what}: {run['path']}", opened, doing="retrying")

    def replay_run(self, run: dict[str, Any], from_task: str) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self.act(lambda: self.client.replay(run["id"], from_task), f"Replaying {run['path']} from {from_task}",
                         lambda run_id: self.open_run(run_id, replace=True), doing="replaying")

        self.push_screen(ConfirmScreen(
            f"Replay {run['path']} from task {from_task}? A new run starts with the same inputs, keeping the "
            "outputs of the tasks before it."), confirmed)

    def resume_run(self, run: dict[str, Any]) -> None:
        self.act(lambda: self.client.resume(run["id"]), f"Resumed {run['path']}", doing="resuming")

    def start_run(self, kind: str, ref: str) -> None:
        """The form of a script (by path) or a flow (by id), then its run."""
        self.open_form(kind, ref)

    @work(group="actions")
    async def open_form(self, kind: str, ref: str) -> None:
        try:
            if kind == "flow":
                flow = await self.client.flow(ref)
                title, fields = f"Run flow {flow['path']}", fields_from_flow(flow["yamlContent"])

                async def submit(values: dict[str, Any]) -> str:
                    return await self.client.execute_flow(ref, values)
            else:
                script = await self.client.script(ref)
                title, fields = f"Run script {script['path']}", fields_from_schema(script["schema"])

                async def submit(values: dict[str, Any]) -> str:
                    return await self.client.run_script(ref, values)
        except ApiError as error:
            if isinstance(error, Disconnected):
                self.connection_lost(error)
            else:
                self.notify(error.message, severity="error")
            return

        def started(run_id: str | None) -> None:
            if run_id:
                self.open_run(run_id)

        self.push_screen(FormScreen(title, fields, submit), started)

    def decide_approval(self, approval_id: str) -> None:
        self.act(lambda: self.client.request("GET", f"/approvals/{approval_id}"), None, self._show_approval,
                 doing="reading the approval")

    def decide_approval_of(self, run_id: str) -> None:
        async def pending() -> dict[str, Any]:
            found = await self.client.request("GET", "/approvals", params={"executionId": run_id})
            if not found:
                raise NotFound("this run waits for no pending approval", 404)
            return dict(found[0])

        self.act(pending, None, self._show_approval, doing="reading the approval")

    def _show_approval(self, approval: dict[str, Any]) -> None:
        def decided(answer: dict[str, Any] | None) -> None:
            if answer and isinstance(self.screen, Page):
                self.screen.reload()

        self.push_screen(ApprovalScreen(approval), decided)


def run(client: FlowmillClient, boot: Boot | None = None) -> None:
    """Open the TUI on this terminal until it is closed."""
    FlowmillApp(client, boot=boot).run()
