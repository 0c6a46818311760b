"""One run: what it is and where it stands, its tasks as a tree (a flow's, with their statuses
and timings), its result or error, its inputs, and its log lines as they are written."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import RichLog, Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from tui.client import FINAL, ApiError, pretty
from tui.screens.base import Detail
from tui.widgets import show

_SEGMENT = re.compile(r"\[\d+\]|[^.\[\]]+")


def key_segments(key: str) -> list[str]:
    """A task's key as the path to it in the tree: `each[0].say` -> each, [0], say."""
    return _SEGMENT.findall(key) or [key]


def task_label(task: dict[str, Any]) -> Text:
    """`✔ name 12 ms`: the status said in words unless it succeeded."""
    name = task["status"].upper()
    label = Text.assemble((show.STATUS_ICON.get(name, "·") + " ", show.STATUS_STYLE.get(name, "")), (task["taskName"], "b"))
    if name != "SUCCESS":
        label.append(f" {task['status']}", style=show.STATUS_STYLE.get(name, ""))
    if task.get("durationMs") is not None:
        label.append(f" {show.duration(task['durationMs'])}", style="dim")
    if task.get("attempts", 1) > 1:
        label.append(f" ×{task['attempts']}", style="dim")
    return label


class RunScreen(Detail):
    REFRESH_S = 1.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel", "Cancel"),
        Binding("t", "retry", "Retry"),
        Binding("p", "replay", "Replay"),
        Binding("w", "resume", "Resume"),
        Binding("a", "decide", "Approve…"),
        Binding("o", "parent", "Parent"),
    ]

    class Loaded(Message):
        def __init__(self, run: dict[str, Any], tasks: list[dict[str, Any]] | None) -> None:
            super().__init__()
            self.run = run
            self.tasks = tasks

    class LogLine(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Ended(Message):
        pass

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: dict[str, Any] | None = None
        self.tasks: list[dict[str, Any]] | None = None
        self.lines_shown = 0  # the stream starts from the first line: these are skipped on a restart
        self.streaming = False
        self._tree_shape: tuple[Any, ...] = ()

    def body(self) -> ComposeResult:
        yield Static("Loading…", id="run-header")
        with Horizontal(id="run-body"):
            tree: Tree[dict[str, Any]] = Tree("tasks", id="tasks")
            tree.border_title = "Tasks"
            yield tree
            with TabbedContent(id="run-tabs"):
                with TabPane("Logs", id="tab-logs"):
                    yield RichLog(id="logs", wrap=True, markup=False, highlight=False, max_lines=20_000, min_width=20)
                with TabPane("Result", id="tab-result"), VerticalScroll():
                    yield Static("", id="result")
                with TabPane("Inputs", id="tab-inputs"), VerticalScroll():
                    yield Static("", id="inputs")

    def on_mount(self) -> None:
        self.query_one("#tasks", Tree).display = False
        self.query_one("#logs", RichLog).focus()
        self.stream_logs()

    # -- loading ------------------------------------------------------------------------------------

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        try:
            run = await self.client.run(self.run_id)
            tasks = (await self.client.execution(self.run_id))["tasks"] if run["kind"] == "flow" else None
        except ApiError as error:
            self.failed(error, "reading the run")
            return
        self.post_message(self.Loaded(run, tasks))

    @on(Loaded)
    def show_run(self, message: Loaded) -> None:
        run = self.run = message.run
        self.tasks = message.tasks
        self.title = f"{run['kind']} {run['path']}"
        head = Text.assemble(show.status(run["status"], icon=True), "  ", (run["kind"], "dim"), " ",
                             (run["path"], "b"), ("  run ", "dim"), run["id"])
        times = Text(f"trigger {run['trigger']['kind']}" + (f" {run['trigger']['detail']}" if run["trigger"].get("detail") else "")
                     + f" · by {run['createdBy']} · created {show.when(run['createdAt'])}"
                     + f" · took {show.duration(run['durationMs'])}" * (run["durationMs"] is not None)
                     + (f" · attempt {run['attempt']}" if run.get("attempt", 1) > 1 else ""), style="dim")
        lines = [head, times]
        if run.get("waitingFor"):
            waiting = run["waitingFor"]
            what = ", ".join(f"{k} {v}" for k, v in waiting.items() if v is not None)
            lines.append(Text(f"waiting for {what}", style="cyan"))
        elif run.get("error"):
            lines.append(Text(show.error_text(run["error"]), style="red"))
        self.query_one("#run-header", Static).update(Text("\n").join(lines))
        self.show_tasks()
        self.show_result()
        self.refresh_bindings()
        if run["status"] in FINAL and self._timer is not None:
            self._timer.pause()  # a final run changes no more (a retry starts the timer again)

    def show_tasks(self) -> None:
        assert self.run is not None
        tree = self.query_one("#tasks", Tree)
        if self.tasks is None:
            tree.display = False
            return
        tree.display = True
        shape = tuple((t["key"], t["status"], t.get("durationMs"), t.get("attempts")) for t in self.tasks) + (self.run["status"],)
        if shape == self._tree_shape:
            return
        self._tree_shape = shape
        selected = tree.cursor_node.data.get("key") if tree.cursor_node and tree.cursor_node.data else None
        tree.clear()
        tree.root.set_label(Text.assemble((self.run["path"].rsplit("/", 1)[-1] + " ", "b"), show.status(self.run["status"], icon=True)))
        tree.root.data = {}
        nodes: dict[tuple[str, ...], TreeNode[dict[str, Any]]] = {(): tree.root}
        paths = [tuple(key_segments(task["key"])) for task in self.tasks]
        parents = {path[:depth] for path in paths for depth in range(1, len(path))}
        for task, segments in zip(self.tasks, paths):
            for depth in range(1, len(segments)):  # a loop's iterations: nodes of their own
                if segments[:depth] not in nodes:
                    nodes[segments[:depth]] = nodes[segments[: depth - 1]].add(segments[depth - 1], data={}, expand=True)
            parent = nodes[segments[:-1]]
            if segments in nodes:
                nodes[segments].set_label(task_label(task))
                nodes[segments].data = task
            elif segments in parents:
                nodes[segments] = parent.add(task_label(task), data=task, expand=True)
            else:
                nodes[segments] = parent.add_leaf(task_label(task), data=task)
            if selected and task["key"] == selected:
                tree.move_cursor(nodes[segments])
        tree.root.expand_all()

    def show_result(self) -> None:
        assert self.run is not None
        run = self.run
        result = self.query_one("#result", Static)
        if run["status"] == "SUCCESS":
            result.update(self.flowmill.code(pretty(run["result"]), "json"))
        elif run.get("error"):
            error = dict(run["error"]) if isinstance(run["error"], dict) else {"error": run["error"]}
            trace = error.pop("traceback", None)
            parts: list[Any] = [Text(f"The run ended {run['status']}.", style="b red"),
                                self.flowmill.code(pretty(error), "json")]
            if trace:
                parts.append(Text(str(trace), style="red"))
            result.update(Group(*parts))
        else:
            result.update(Text(f"No result yet: the run is {run['status']}.", style="dim"))
        inputs = self.query_one("#inputs", Static)
        inputs.update(self.flowmill.code(pretty(run.get("args")), "json"))

    # -- the logs, live -----------------------------------------------------------------------------

    @work(exclusive=True, group="logs")
    async def stream_logs(self) -> None:
        self.streaming = True
        seen = 0
        try:
            async for event, data in self.client.log_stream(self.run_id):
                if event in ("log", "stream"):
                    seen += 1
                    if seen > self.lines_shown:
                        self.post_message(self.LogLine(data))
                elif event == "end":
                    break
        except ApiError as error:
            self.streaming = False
            self.failed(error, "reading the logs")
            return
        self.streaming = False
        self.post_message(self.Ended())

    @on(LogLine)
    def add_line(self, message: LogLine) -> None:
        self.lines_shown += 1
        self.query_one("#logs", RichLog).write(message.text)

    @on(Ended)
    def ended(self) -> None:
        self.reload()

    def reconnected(self) -> None:
        self.reload()
        if not self.streaming and (self.run is None or self.run["status"] not in FINAL):
            self.stream_logs()

    def restart(self) -> None:
        """The same run runs again (a flow's retry): its logs from the top, its status live."""
        self.query_one("#logs", RichLog).clear()
        self.lines_shown = 0
        self._tree_shape = ()
        if self._timer is not None:
            self._timer.resume()
        self.reload()
        self.stream_logs()

    # -- actions ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.run
        if action in ("back",):
            return True
        if run is None:
            return action not in ("cancel", "retry", "replay", "resume", "decide", "parent")
        final = run["status"] in FINAL
        waiting = run.get("waitingFor") or {}
        return {
            "cancel": not final,
            "retry": final and run["kind"] != "task",
            "replay": final and run["kind"] == "flow" and bool(self.tasks),
            "resume": run["status"] in ("WAITING", "PAUSED") and not waiting.get("approval"),
            "decide": bool(waiting.get("approval")),
            "parent": bool(run.get("parentJob")),
        }.get(action, True)

    def action_cancel(self) -> None:
        if self.run is not None:
            self.flowmill.cancel_run(self.run)

    def action_retry(self) -> None:
        if self.run is not None:
            self.flowmill.retry_run(self.run, on_same=self.restart)

    def action_replay(self) -> None:
        if self.run is None or not self.tasks:
            return
        node = self.query_one("#tasks", Tree).cursor_node
        task = node.data if node is not None and node.data else None
        if task and task.get("key"):
            start = key_segments(task["key"])[0]
        else:  # the first top-level task that did not succeed
            top = [t for t in self.tasks if len(key_segments(t["key"])) == 1]
            start = next((t["key"] for t in top if t["status"] != "SUCCESS"), top[0]["key"] if top else "")
        if start:
            self.flowmill.replay_run(self.run, start)

    def action_resume(self) -> None:
        if self.run is not None:
            self.flowmill.resume_run(self.run)

    def action_decide(self) -> None:
        if self.run is not None:
            self.flowmill.decide_approval_of(self.run["id"])

    def action_parent(self) -> None:
        if self.run is not None and self.run.get("parentJob"):
            self.flowmill.open_run(self.run["parentJob"])
