"""Workflow instances (DESIGN §4.4): the registered workflows, the instances of one, and what
a person does to an instance: start one, pause, resume, restart, terminate. A server without
the instances API says so here and nowhere else."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, OptionList, RichLog, Select, Static, TabbedContent, TabPane, Tree

from tui.client import INSTANCE_STATUSES, ApiError, NotFound, pretty
from tui.screens.base import Detail, Section
from tui.screens.dialogs import ConfirmScreen, FormScreen
from tui.widgets import show
from tui.widgets.form import Field
from tui.widgets.tables import Table

UNAVAILABLE = "Workflow instances are not available on this server (it has no /api/workflows)."
ACTIONS = {"pause": "Pause", "resume": "Resume", "restart": "Restart", "terminate": "Terminate"}


def step_of(instance: dict[str, Any]) -> str:
    step = instance.get("currentStep") or instance.get("step")
    if isinstance(step, dict):
        return str(step.get("name") or step.get("id") or "")
    return str(step or "")


def moment(instance: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = instance.get(name)
        if isinstance(value, (int, float)):
            return int(value)
    return None


class InstanceActions:
    """Pause, resume, restart and terminate, asked for from the list or from an instance."""

    def manage(self: Any, name: str, instance_id: str, action: str) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self.flowmill.act(lambda: self.client.manage_instance(name, instance_id, action),
                                  f"{ACTIONS[action]}: {name} {instance_id}", doing=f"{action} the instance")

        if action in ("restart", "terminate"):
            self.app.push_screen(ConfirmScreen(f"{ACTIONS[action]} the instance {instance_id} of {name}?"), confirmed)
        else:
            confirmed(True)


class WorkflowsScreen(InstanceActions, Section):
    SECTION = "workflows"
    REFRESH_S = 3.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New…"),
        Binding("p", "manage('pause')", "Pause"),
        Binding("u", "manage('resume')", "Resume"),
        Binding("R", "manage('restart')", "Restart"),
        Binding("x", "manage('terminate')", "Terminate"),
    ]

    class Loaded(Message):
        def __init__(self, names: list[str] | None, instances: list[dict[str, Any]]) -> None:
            super().__init__()
            self.names = names  # None: the server has no instances API
            self.instances = instances

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.instances: list[dict[str, Any]] = []
        self.available = True

    def body(self) -> ComposeResult:
        yield Static(UNAVAILABLE, id="workflows-unavailable", classes="empty")
        with Horizontal(id="workflows-body"):
            names = OptionList(id="workflow-names")
            names.border_title = "Workflows"
            yield names
            with Vertical():
                with Horizontal(classes="filters"):
                    yield Select([(s, s) for s in INSTANCE_STATUSES], prompt="status", id="status", compact=True)
                yield Table("Instance", "Status", "Run", "Step", "Created", "Updated", id="instances")

    def on_mount(self) -> None:
        self.query_one("#workflows-unavailable").display = False
        self.query_one("#workflow-names").focus()

    def workflow(self) -> str | None:
        names = self.query_one("#workflow-names", OptionList)
        if names.highlighted is None or not self.names:
            return None
        return self.names[names.highlighted] if names.highlighted < len(self.names) else None

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        chosen = self.workflow()
        status = self.query_one("#status", Select).value
        try:
            names = await self.client.workflows()
            chosen = chosen if chosen in names else (names[0] if names else None)
            instances = (await self.client.instances(chosen, None if status is Select.NULL else str(status))).items \
                if chosen else []
        except NotFound:
            self.post_message(self.Loaded(None, []))
            return
        except ApiError as error:
            self.failed(error)
            return
        self.post_message(self.Loaded(names, instances))

    @on(Loaded)
    def show_workflows(self, message: Loaded) -> None:
        self.available = message.names is not None
        self.query_one("#workflows-unavailable").display = not self.available
        self.query_one("#workflows-body").display = self.available
        if not self.available:
            return
        assert message.names is not None
        names = self.query_one("#workflow-names", OptionList)
        if message.names != self.names:
            keep = self.workflow()
            self.names = message.names
            names.clear_options()
            names.add_options(self.names)
            if self.names:
                names.highlighted = self.names.index(keep) if keep in self.names else 0
        self.instances = message.instances
        table = self.query_one("#instances", Table)
        table.refill(
            (str(i.get("id")), (str(i.get("id")), show.status(str(i.get("status", "?"))), str(i.get("runNumber", "")),
                                step_of(i), show.ago(moment(i, "createdAt", "created_at")),
                                show.ago(moment(i, "updatedAt", "updated_at"))))
            for i in self.instances
        )
        table.border_title = f"Instances of {self.workflow() or '-'}: {table.row_count}"
        self.refresh_bindings()

    @on(OptionList.OptionHighlighted, "#workflow-names")
    @on(Select.Changed, "#status")
    def chosen(self) -> None:
        self.reload()

    def selected(self) -> str | None:
        return self.query_one("#instances", Table).current_key()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.available:
            return action not in ("new", "manage")
        if action == "manage":
            return True if self.selected() else None
        if action == "new":
            return True if self.workflow() else None
        return True

    def action_manage(self, action: str) -> None:
        name, instance_id = self.workflow(), self.selected()
        if name and instance_id:
            self.manage(name, instance_id, action)

    def action_new(self) -> None:
        name = self.workflow()
        if not name:
            return
        fields = [Field("params", "json", default={}, description="the workflow's parameters, as JSON"),
                  Field("id", "string", description="leave empty for a generated one")]

        async def create(values: dict[str, Any]) -> dict[str, Any]:
            return await self.client.create_instance(name, values.get("params", {}), values.get("id"))

        def created(instance: dict[str, Any] | None) -> None:
            if instance:
                self.app.push_screen(InstanceScreen(name, str(instance.get("id"))))

        self.app.push_screen(FormScreen(f"New instance of {name}", fields, create, submit_label="Start"), created)

    @on(DataTable.RowSelected, "#instances")
    def open_instance(self, event: DataTable.RowSelected) -> None:
        name = self.workflow()
        if name:
            self.app.push_screen(InstanceScreen(name, str(event.row_key.value)))

    @on(DataTable.RowHighlighted)
    def highlighted(self) -> None:
        self.refresh_bindings()


class InstanceScreen(InstanceActions, Detail):
    """One instance: its status and current step, its steps as a tree, its events, logs and
    parameters."""

    REFRESH_S = 2.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "manage('pause')", "Pause"),
        Binding("u", "manage('resume')", "Resume"),
        Binding("R", "manage('restart')", "Restart"),
        Binding("x", "manage('terminate')", "Terminate"),
    ]

    class Loaded(Message):
        def __init__(self, instance: dict[str, Any], history: dict[str, Any]) -> None:
            super().__init__()
            self.instance = instance
            self.history = history

    def __init__(self, name: str, instance_id: str) -> None:
        super().__init__()
        self.name_ = name
        self.instance_id = instance_id
        self._logs_shown = 0

    def body(self) -> ComposeResult:
        yield Static("Loading…", id="run-header")
        with Horizontal(id="run-body"):
            tree: Tree[dict[str, Any]] = Tree("steps", id="tasks")
            tree.border_title = "Steps"
            yield tree
            with TabbedContent(id="run-tabs"):
                with TabPane("Logs", id="tab-logs"):
                    yield RichLog(id="logs", wrap=True, markup=False, max_lines=20_000, min_width=20)
                with TabPane("Events", id="tab-events"), VerticalScroll():
                    yield Static("", id="events")
                with TabPane("Params", id="tab-inputs"), VerticalScroll():
                    yield Static("", id="inputs")

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            instance = await self.client.instance(self.name_, self.instance_id)
            try:
                history = await self.client.instance_history(self.name_, self.instance_id)
            except NotFound:
                history = {}
        except ApiError as error:
            self.failed(error, "reading the instance")
            return
        self.post_message(self.Loaded(instance, history))

    @on(Loaded)
    def show_instance(self, message: Loaded) -> None:
        instance, history = message.instance, message.history
        head = Text.assemble(show.status(str(instance.get("status", "?")), icon=True), "  workflow ", (self.name_, "b"),
                             "  instance ", self.instance_id)
        detail = Text(f"run {instance.get('runNumber', '?')} · step {step_of(instance) or '-'}", style="dim")
        for name in ("waitingFor", "awaitedEvent", "wakeAt", "nextRetryAt"):
            if instance.get(name):
                detail.append(f" · {name} {instance[name]}")
        if instance.get("error"):
            detail.append(f"\n{show.error_text(instance['error'])}", style="red")
        self.query_one("#run-header", Static).update(Text("\n").join([head, detail]))
        tree = self.query_one("#tasks", Tree)
        tree.clear()
        tree.root.set_label(Text(self.name_, style="b"))
        for step in history.get("steps", []) if isinstance(history.get("steps"), list) else []:
            label = Text.assemble((f"{step.get('name', step.get('stepName', '?'))} ", "b"),
                                  show.status(str(step.get("status", "")), icon=True))
            if step.get("durationMs") is not None:
                label.append(f" {show.duration(step['durationMs'])}", style="dim")
            tree.root.add_leaf(label, data=step)
        tree.root.expand()
        events = history.get("events", [])
        self.query_one("#events", Static).update(self.flowmill.code(pretty(events), "json"))
        self.query_one("#inputs", Static).update(self.flowmill.code(pretty(instance.get("params")), "json"))
        logs = history.get("logs", []) if isinstance(history.get("logs"), list) else []
        log = self.query_one("#logs", RichLog)
        for line in logs[self._logs_shown:]:
            log.write(line.get("message", line.get("line", str(line))) if isinstance(line, dict) else str(line))
        self._logs_shown = len(logs)

    def action_manage(self, action: str) -> None:
        self.manage(self.name_, self.instance_id, action)
