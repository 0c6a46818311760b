"""What a flow is once its YAML has been read: plain frozen objects the validator and the runner
walk. `load(text)` is the one way in; it refuses a flow with every structural error it finds, each
with its path (`tasks[1].properties.tasks[0].name`) and, where the text says, its line.

Properties stay raw here: templates are rendered by the runner, task by task, when it gets to
them. Control-flow tasks (`flow.foreach`, `flow.if`, ...) keep their nested task lists apart from
their properties, in `Task.children`, so that a plugin's input schema never sees them and the
runner never has to dig them out of a dict.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import msgspec

from app.errors import Invalid

INPUT_TYPES = ("string", "integer", "number", "boolean", "select", "multiselect", "json", "datetime", "array", "secret")
ITEM_TYPES = ("string", "integer", "number", "boolean", "json")  # what an array input may hold
RETRY_TYPES = ("constant", "exponential", "random")

# Control-flow types whose nested task lists live under these property keys. flow.switch's
# `cases` is a mapping of lists: its slots are named "case:<key>".
CONTROL_SLOTS: dict[str, tuple[str, ...]] = {
    "flow.sequential": ("tasks",),
    "flow.parallel": ("tasks",),
    "flow.foreach": ("tasks",),
    "flow.loop_until": ("tasks",),
    "flow.if": ("then", "else"),
    "flow.switch": ("cases", "default"),
}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When a failed task is tried again. `attempts` counts the first try (3 = two retries)."""

    type: str  # "constant" | "exponential" | "random"
    attempts: int
    interval_s: float  # constant: the wait; exponential: the first wait (then doubled); random: the lower bound
    max_interval_s: float | None = None  # exponential: the cap; random: the upper bound
    max_duration_s: float | None = None  # no new attempt starts once this long has passed since the first began

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        if self.type == "exponential":
            wait = self.interval_s * 2.0 ** min(max(attempt - 1, 0), 1000)
            return wait if self.max_interval_s is None else min(wait, self.max_interval_s)
        if self.type == "random":
            upper = self.max_interval_s if self.max_interval_s is not None else self.interval_s
            return random.uniform(self.interval_s, upper)
        return self.interval_s

    def next_delay(self, attempt: int, elapsed_s: float) -> float | None:
        """The wait before another attempt after attempt `attempt` failed, `elapsed_s` seconds
        after the first attempt began; None when the task has had its last chance."""
        if attempt >= self.attempts:
            return None
        wait = self.delay(attempt)
        if self.max_duration_s is not None and elapsed_s + wait > self.max_duration_s:
            return None
        return wait


@dataclasses.dataclass(frozen=True)
class Task:
    """One step of a flow: a plugin (`type`) with its raw properties and how to run it."""

    name: str
    type: str
    properties: dict[str, Any]  # raw (templates unrendered), without the nested task lists
    path: str  # "tasks[2]", "tasks[1].properties.tasks[0]", "errors[0]"
    retry: RetryPolicy | None = None
    timeout_s: float | None = None
    allow_failure: bool = False
    run_if: str | None = None  # a template, e.g. "{{ inputs.n > 2 }}"
    disabled: bool = False
    description: str = ""
    # Nested task lists by slot: {"tasks": ...} for sequential/parallel/foreach/loop_until,
    # {"then": ..., "else": ...} for flow.if ("else" only when written), {"case:<key>": ...,
    # "default": ...} for flow.switch, in the order the YAML gives them.
    children: dict[str, tuple[Task, ...]] = dataclasses.field(default_factory=dict)

    def walk(self) -> Iterator[Task]:
        """This task, then every task nested in it, in document order."""
        yield self
        for tasks in self.children.values():
            for task in tasks:
                yield from task.walk()


@dataclasses.dataclass(frozen=True)
class FlowInput:
    """A typed input an execution is given (see `inputs.check_inputs`)."""

    name: str
    type: str  # one of INPUT_TYPES
    required: bool = False  # required and no default: an execution without it is refused
    default: Any = None  # already checked and converted for the type
    description: str = ""
    values: tuple[Any, ...] = ()  # select / multiselect: the choices
    min: float | None = None  # integer / number: bounds of the value
    max: float | None = None
    min_length: int | None = None  # string / secret: characters; array / multiselect: items
    max_length: int | None = None
    pattern: str | None = None  # string / secret: the whole value must match (re.fullmatch)
    items: str | None = None  # array: the items' type (one of ITEM_TYPES); None: anything


@dataclasses.dataclass(frozen=True)
class Flow:
    """A flow as written: the runner's plan."""

    name: str
    namespace: str
    description: str
    labels: dict[str, str]
    inputs: tuple[FlowInput, ...]
    tasks: tuple[Task, ...]
    outputs: dict[str, Any]  # name -> template, rendered at the end of a successful execution
    errors: tuple[Task, ...]  # run when the flow fails
    finally_: tuple[Task, ...]  # YAML `finally`: always run at the end
    concurrency_limit: int | None  # YAML `concurrency: {limit: N}`
    timeout_s: float | None  # YAML `timeout: 1h`

    def walk(self) -> Iterator[Task]:
        """Every task, nested ones included, in document order: tasks, errors, finally."""
        for task in (*self.tasks, *self.errors, *self.finally_):
            yield from task.walk()

    def find(self, name: str) -> Task | None:
        """The task called `name` anywhere in the flow (names are unique across it)."""
        return next((task for task in self.walk() if task.name == name), None)


class FlowError(msgspec.Struct, omit_defaults=True):
    """One thing wrong with a flow; also the wire shape of validation errors."""

    path: str  # "tasks[2].properties.url", "inputs[0].type", "" for the document
    message: str
    line: int | None = None  # 1-based, when known
    column: int | None = None


class FlowInvalid(Invalid):
    """The YAML is not a flow (422). `errors` lists every problem found, not just the first."""

    def __init__(self, errors: list[FlowError]) -> None:
        first = errors[0] if errors else FlowError("", "invalid flow")
        where = f"{first.path}: " if first.path else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid flow: {where}{first.message}{more}", {"errors": msgspec.to_builtins(errors)})
        self.errors = errors


def load(text: str) -> Flow:
    """The flow written in `text` (YAML, read safely: plain data only). FlowInvalid with all its
    structural errors when it is not a well-formed flow."""
    flow, errors = parse(text)
    if errors or flow is None:
        raise FlowInvalid(errors)
    return flow


def parse(text: str) -> tuple[Flow | None, list[FlowError]]:
    """The flow and its structural errors. The flow is None only when the text is not YAML or not
    a mapping; otherwise it holds what could be read (a task with a bad field keeps the rest),
    so that validation can go on to check plugins and templates too."""
    from app.flows import structure  # it builds these classes: imported here to keep the cycle out

    flow, errors, _ = structure.build(text)
    return flow, errors
