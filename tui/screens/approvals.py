"""Approvals: the gates of flow runs waiting for a person, and the dialog that decides one
with its form."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Label, Static

from tui.client import ApiError, Disconnected, Refused
from tui.screens.base import Section
from tui.widgets import show
from tui.widgets.form import FormInvalid, SchemaForm, fields_from_declarations
from tui.widgets.tables import Table

STATUSES = ("PENDING", "APPROVED", "REJECTED", "TIMED_OUT")


class ApprovalsScreen(Section):
    SECTION = "approvals"
    REFRESH_S = 3.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "decide", "Decide…"),
        Binding("o", "open_run", "Run"),
        Binding("s", "next_status", "Status"),
    ]

    class Loaded(Message):
        def __init__(self, approvals: list[dict[str, Any]]) -> None:
            super().__init__()
            self.approvals = approvals

    def __init__(self) -> None:
        super().__init__()
        self.status = "PENDING"
        self.approvals: list[dict[str, Any]] = []

    def body(self) -> ComposeResult:
        yield Table("Task", "Message", "Run", "Role", "Since", "Status", id="approvals")

    def on_mount(self) -> None:
        self.query_one("#approvals").focus()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            approvals = await self.client.approvals(self.status)
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(approvals))

    @on(Loaded)
    def show_approvals(self, message: Loaded) -> None:
        self.approvals = message.approvals
        table = self.query_one("#approvals", Table)
        table.refill(
            (a["id"], (a["task"], a["message"], show.short_id(a["executionId"]), a["role"], show.ago(a["createdAt"]),
                       show.status(a["status"])))
            for a in self.approvals
        )
        table.border_title = f"Approvals {self.status.lower().replace('_', ' ')}: {table.row_count}  (s: another status)"
        self.refresh_bindings()

    def selected(self) -> dict[str, Any] | None:
        key = self.query_one("#approvals", Table).current_key()
        return next((a for a in self.approvals if a["id"] == key), None)

    @on(DataTable.RowSelected, "#approvals")
    def action_decide(self) -> None:
        approval = self.selected()
        if approval is not None and approval["status"] == "PENDING":
            self.flowmill._show_approval(approval)
        elif approval is not None:
            self.flowmill.open_run(approval["executionId"])

    def action_open_run(self) -> None:
        approval = self.selected()
        if approval is not None:
            self.flowmill.open_run(approval["executionId"])

    def action_next_status(self) -> None:
        self.status = STATUSES[(STATUSES.index(self.status) + 1) % len(STATUSES)]
        self.reload()


class ApprovalScreen(ModalScreen[Any]):
    """One approval: its message and form; approve with the form's values, or reject."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "decide(True)", "Approve", priority=True),
        Binding("ctrl+r", "decide(False)", "Reject", priority=True),
        Binding("escape", "dismiss_dialog", "Cancel"),
    ]

    def __init__(self, approval: dict[str, Any]) -> None:
        super().__init__(classes="dialog-screen")
        self.approval = approval
        self.fields = fields_from_declarations(approval.get("form") or [])

    def compose(self) -> ComposeResult:
        a = self.approval
        with Vertical(classes="dialog", id="approval-dialog"):
            yield Label(f"Approval: {a['task']}", classes="dialog-title")
            about = Text(a["message"] or "(no message)", style="b")
            about.append(f"\nrun {a['executionId']} · decided by {a['role']} or above · waiting since "
                         f"{show.when(a['createdAt'])}" + (f" · expires {show.when(a['expiresAt'])}" if a.get("expiresAt") else ""),
                         style="dim")
            yield Static(about, classes="dialog-about")
            if self.fields:
                yield SchemaForm(self.fields, id="form")
            yield Label("", id="form-message", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Approve (ctrl+s)", variant="success", id="approve", compact=True)
                yield Button("Reject (ctrl+r)", variant="error", id="reject", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#form-message", Label).display = False
        if self.fields:
            self.query_one(SchemaForm).focus_first()
        else:
            self.query_one("#approve").focus()

    @on(Button.Pressed, "#approve")
    def approve_pressed(self) -> None:
        self.action_decide(True)

    @on(Button.Pressed, "#reject")
    def reject_pressed(self) -> None:
        self.action_decide(False)

    @on(Button.Pressed, "#cancel")
    def action_dismiss_dialog(self) -> None:
        self.dismiss(None)

    def action_decide(self, approve: bool) -> None:
        values: dict[str, Any] = {}
        if self.fields:
            form = self.query_one(SchemaForm)
            try:
                values = form.values()
            except FormInvalid:
                if approve:
                    self._say("Some fields are not right: see beside them.")
                    return
                form.show_errors({})  # a rejection is not held back by the form
        self.send(approve, values)

    @work(exclusive=True, group="decide")
    async def send(self, approve: bool, values: dict[str, Any]) -> None:
        client = self.app.client  # type: ignore[attr-defined]
        try:
            answer = await client.decide(self.approval["id"], approve, values)
        except ApiError as error:
            if isinstance(error, Refused) and error.fields and self.fields:
                self.query_one(SchemaForm).show_errors(error.fields)
            self._say(f"The server did not answer: {error.message}" if isinstance(error, Disconnected) else error.message)
            return
        self.app.notify(f"{'Approved' if approve else 'Rejected'}: {self.approval['task']}")
        self.dismiss(answer)

    def _say(self, text: str) -> None:
        message = self.query_one("#form-message", Label)
        message.update(text)
        message.display = True
