"""Dialogs over the current screen: the form that starts a run, a yes-or-no question, a
notice shown once, and signing in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from tui.client import ApiError, Disconnected, Refused
from tui.widgets.form import Field, FormInvalid, SchemaForm


class FormScreen(ModalScreen[Any]):
    """A form that does something with its values when submitted (`submit`, called in a
    worker); it closes with what `submit` returned, or stays open showing what was wrong,
    beside each field the server named."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Submit", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, fields: list[Field], submit: Callable[[dict[str, Any]], Awaitable[Any]], *,
                 about: str = "", submit_label: str = "Run") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.about = about
        self.fields = fields
        self.submit_label = submit_label
        self._submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="form-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.about:
                yield Static(self.about, classes="dialog-about", markup=False)
            yield SchemaForm(self.fields, id="form")
            yield Label("", id="form-message", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.submit_label} (ctrl+s)", variant="primary", id="submit", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#form-message", Label).display = False
        self.query_one(SchemaForm).focus_first()

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        try:
            values = self.query_one(SchemaForm).values()
        except FormInvalid:
            self._say("Some fields are not right: see beside them.")
            return
        self.send(values)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="submit")
    async def send(self, values: dict[str, Any]) -> None:
        self.query_one("#submit", Button).disabled = True
        try:
            answer = await self._submit(values)
        except ApiError as error:
            self.query_one("#submit", Button).disabled = False
            if isinstance(error, Refused) and error.fields:
                self.query_one(SchemaForm).show_errors(error.fields)
            self._say(error.message if not isinstance(error, Disconnected) else f"The server did not answer: {error.message}")
            return
        self.dismiss(answer)

    def _say(self, text: str) -> None:
        message = self.query_one("#form-message", Label)
        message.update(text)
        message.display = True


class ConfirmScreen(ModalScreen[bool]):
    """A yes-or-no question; True for yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="dialog-screen")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Static(self.question, classes="dialog-about", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="warning", id="yes", compact=True)
                yield Button("No (n)", id="no", compact=True)
        yield Footer()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class NoticeScreen(ModalScreen[None]):
    """Something to read once (the local admin's password on the first start)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter,escape", "close", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="notice-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, classes="dialog-about", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (enter)", variant="primary", id="ok", compact=True)
        yield Footer()

    @on(Button.Pressed)
    def action_close(self) -> None:
        self.dismiss(None)


class LoginScreen(ModalScreen[bool]):
    """Sign in with a username and password, when the TUI has no token that works."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+s", "sign_in", "Sign in", priority=True),
                                             Binding("escape", "app.quit", "Quit")]

    def __init__(self, address: str, why: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.address = address
        self.why = why

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="login-dialog"):
            yield Label(f"Sign in to {self.address}", classes="dialog-title")
            if self.why:
                yield Static(self.why, classes="dialog-about", markup=False)
            yield Input(placeholder="username", id="username", compact=True)
            yield Input(placeholder="password", password=True, id="password", compact=True)
            yield Label("", id="login-message", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Sign in (enter)", variant="primary", id="sign-in", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#login-message", Label).display = False

    @on(Input.Submitted)
    @on(Button.Pressed, "#sign-in")
    def action_sign_in(self) -> None:
        self.sign_in(self.query_one("#username", Input).value.strip(), self.query_one("#password", Input).value)

    @work(exclusive=True)
    async def sign_in(self, username: str, password: str) -> None:
        from tui.client import Login

        client = self.app.client  # type: ignore[attr-defined]
        client.login = Login(username, password)
        try:
            await client.sign_in()
        except ApiError as error:
            client.login = None
            message = self.query_one("#login-message", Label)
            message.update(error.message)
            message.display = True
            return
        self.dismiss(True)
