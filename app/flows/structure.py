"""Turning a flow's YAML data into the model, collecting every structural error on the way.

Each field is checked where it is read, and a bad field does not stop the reading: the flow
built holds everything that could be read, so `validate` can go on to check plugins and
templates, and the user sees all the problems of a flow at once.
"""

from __future__ import annotations

import re
from typing import Any

from app.flows import inputs as inputs_
from app.flows.durations import parse_duration
from app.flows.model import (
    CONTROL_SLOTS,
    RETRY_TYPES,
    Flow,
    FlowError,
    FlowInput,
    RetryPolicy,
    Task,
)
from app.flows.source import Document, SyntaxProblem, read

FLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # also a path segment: f/<namespace>/<name>
FLOW_NAME_RULE = "up to 100 letters, digits, '_', '.' or '-', starting with a letter or digit"
TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")  # read as outputs.<name> (or outputs['a-b'])
TASK_NAME_RULE = "up to 100 letters, digits, '_' or '-', starting with a letter or '_'"
PLUGIN_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")

FLOW_FIELDS = (
    "name", "namespace", "description", "labels", "inputs", "tasks", "outputs", "errors", "finally", "concurrency", "timeout",
)
TASK_FIELDS = ("name", "type", "description", "properties", "retry", "timeout", "allowFailure", "runIf", "disabled")
RETRY_FIELDS = ("type", "attempts", "interval", "maxInterval", "maxDuration")
MAX_ATTEMPTS = 100


def build(text: str) -> tuple[Flow | None, list[FlowError], Document | None]:
    """See `model.parse`; also the document read, to place later errors (None: not YAML)."""
    try:
        doc = read(text)
    except SyntaxProblem as exc:
        p = exc.problem
        return None, [FlowError(p.path, p.message, p.line, p.column)], None
    reader = _Reader()
    for p in doc.problems:
        reader.errors.append(FlowError(p.path, p.message, p.line, p.column))
    flow = reader.flow(doc.data)
    return flow, located(reader.errors, doc), doc


def located(errors: list[FlowError], doc: Document) -> list[FlowError]:
    """Each error with the line of its path (or of its nearest written parent), in text order."""
    for error in errors:
        if error.line is None:
            where = doc.position(error.path)
            if where is not None:
                error.line, error.column = where
    return sorted(errors, key=lambda e: (e.line is None, e.line or 0, e.column or 0))


class _Reader:
    def __init__(self) -> None:
        self.errors: list[FlowError] = []
        self.names: dict[str, str] = {}  # task name -> path of its first use

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FlowError(path, message))

    # -- the flow ------------------------------------------------------------------------

    def flow(self, data: Any) -> Flow | None:
        if not isinstance(data, dict):
            self.fail("", "a flow is a YAML mapping with at least name, namespace and tasks")
            return None
        self.unknown(data, "", FLOW_FIELDS, "")
        name = self.name(data, "name", "", FLOW_NAME, FLOW_NAME_RULE)
        namespace = self.name(data, "namespace", "", FLOW_NAME, FLOW_NAME_RULE)
        if "tasks" not in data:
            self.fail("tasks", "required: the list of tasks the flow runs")
        tasks = self.task_list(data["tasks"], "tasks", required=True) if "tasks" in data else ()
        concurrency = self.concurrency(data.get("concurrency"))
        return Flow(
            name=name,
            namespace=namespace,
            description=self.text(data, "description", ""),
            labels=self.labels(data.get("labels")),
            inputs=self.inputs(data.get("inputs")),
            tasks=tasks,
            outputs=self.outputs(data.get("outputs")),
            errors=self.task_list(data.get("errors") or [], "errors"),
            finally_=self.task_list(data.get("finally") or [], "finally"),
            concurrency_limit=concurrency,
            timeout_s=self.duration(data, "timeout", ""),
        )

    def unknown(self, data: dict[Any, Any], path: str, fields: tuple[str, ...], hint: str) -> None:
        for key in data:
            if key not in fields:
                where = f"{path}.{key}" if path else str(key)
                self.fail(where, f"unknown field '{key}'{hint} (known: {', '.join(fields)})")

    def name(self, data: dict[str, Any], key: str, path: str, pattern: re.Pattern[str], rule: str) -> str:
        where = f"{path}.{key}" if path else key
        value = data.get(key)
        if value is None:
            self.fail(where, "required")
            return ""
        if isinstance(value, bool):
            self.fail(where, "YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote the name")
            return ""
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(where, f"{value!r} is not a valid name: {rule}")
            return value if isinstance(value, str) else ""
        return value

    def text(self, data: dict[str, Any], key: str, path: str) -> str:
        value = data.get(key, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(f"{path}.{key}" if path else key, "must be text")
            return ""
        return value

    def flag(self, data: dict[str, Any], key: str, path: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be true or false")
            return False
        return value

    def duration(self, data: dict[str, Any], key: str, path: str, zero_ok: bool = False) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        where = f"{path}.{key}" if path else key
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(where, str(exc))
            return None
        if seconds == 0 and not zero_ok:
            self.fail(where, "must be longer than 0")
            return None
        return seconds

    def labels(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail("labels", "must be a mapping of label -> value")
            return {}
        labels: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, (str, int, float, bool)):
                self.fail(f"labels.{key}", "a label is text: value (numbers and booleans are kept as text)")
                continue
            labels[key] = ("true" if item else "false") if isinstance(item, bool) else str(item)
        return labels

    def outputs(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail("outputs", "must be a mapping of output name -> value (usually a template)")
            return {}
        for key in value:
            if not isinstance(key, str) or not TASK_NAME.fullmatch(key):
                self.fail(f"outputs.{key}", f"{key!r} is not a valid output name (letters, digits, '_' and '-')")
        return dict(value)

    def concurrency(self, value: Any) -> int | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail("concurrency", "must be a mapping: {limit: N}")
            return None
        self.unknown(value, "concurrency", ("limit",), "")
        limit = value.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            self.fail("concurrency.limit", "must be a whole number of executions, 1 or more")
            return None
        return limit

    # -- tasks ---------------------------------------------------------------------------

    def task_list(self, value: Any, path: str, required: bool = False) -> tuple[Task, ...]:
        if not isinstance(value, list):
            self.fail(path, "must be a list of tasks")
            return ()
        if required and not value:
            self.fail(path, "must hold at least one task")
        tasks = (self.task(item, f"{path}[{i}]") for i, item in enumerate(value))
        return tuple(task for task in tasks if task is not None)

    def task(self, data: Any, path: str) -> Task | None:
        if not isinstance(data, dict):
            self.fail(path, "a task is a mapping with at least name and type")
            return None
        self.unknown(data, path, TASK_FIELDS, " (a task's settings go under 'properties')")
        name = self.name(data, "name", path, TASK_NAME, TASK_NAME_RULE)
        if name:
            if name in self.names:
                first = self.names[name]
                why = f"duplicate task name '{name}' (also at {first}): names are unique across the whole flow"
                self.fail(f"{path}.name", why)
            else:
                self.names[name] = path
        type_ = data.get("type")
        if not isinstance(type_, str) or not PLUGIN_ID.fullmatch(type_):
            problem = "required: a plugin id such as util.log"
            if type_ is not None:
                problem = f"{type_!r} is not a plugin id (such as util.log)"
            self.fail(f"{path}.type", problem)
            type_ = type_ if isinstance(type_, str) else ""
        properties = data.get("properties", {})
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            self.fail(f"{path}.properties", "must be a mapping")
            properties = {}
        properties = dict(properties)
        children = self.children(type_, properties, f"{path}.properties")
        run_if = data.get("runIf")
        if isinstance(run_if, bool):
            run_if = "true" if run_if else "false"
        elif run_if is not None and not isinstance(run_if, str):
            self.fail(f"{path}.runIf", 'must be a condition: a template such as "{{ inputs.n > 2 }}"')
            run_if = None
        return Task(
            name=name,
            type=type_,
            properties=properties,
            path=path,
            retry=self.retry(data.get("retry"), f"{path}.retry"),
            timeout_s=self.duration(data, "timeout", path),
            allow_failure=self.flag(data, "allowFailure", path),
            run_if=run_if,
            disabled=self.flag(data, "disabled", path),
            description=self.text(data, "description", path),
            children=children,
        )

    def children(self, type_: str, properties: dict[str, Any], path: str) -> dict[str, tuple[Task, ...]]:
        """Take the nested task lists of a control-flow task out of its properties."""
        slots = CONTROL_SLOTS.get(type_, ())
        children: dict[str, tuple[Task, ...]] = {}
        if slots == ("tasks",):
            if "tasks" not in properties:
                self.fail(f"{path}.tasks", f"required: the tasks {type_} runs")
            if "tasks" in properties:
                children["tasks"] = self.task_list(properties.pop("tasks"), f"{path}.tasks", required=True)
        elif type_ == "flow.if":
            if "then" not in properties:
                self.fail(f"{path}.then", "required: the tasks run when the condition holds")
            if "then" in properties:
                children["then"] = self.task_list(properties.pop("then"), f"{path}.then", required=True)
            if "else" in properties:
                children["else"] = self.task_list(properties.pop("else") or [], f"{path}.else")
        elif type_ == "flow.switch":
            cases = properties.pop("cases", None)
            if not isinstance(cases, dict) or not cases:
                self.fail(f"{path}.cases", "required: a mapping of value -> list of tasks, at least one case")
                cases = {}
            for key, tasks in cases.items():
                text = ("true" if key else "false") if isinstance(key, bool) else str(key)  # compared as text
                children[f"case:{text}"] = self.task_list(tasks if tasks is not None else [], f"{path}.cases.{text}")
            if "default" in properties:
                children["default"] = self.task_list(properties.pop("default") or [], f"{path}.default")
        return children

    def retry(self, value: Any, path: str) -> RetryPolicy | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping: {type, attempts, interval, maxInterval?, maxDuration?}")
            return None
        before = len(self.errors)
        self.unknown(value, path, RETRY_FIELDS, "")
        type_ = value.get("type", "constant")
        if type_ not in RETRY_TYPES:
            self.fail(f"{path}.type", f"must be one of {', '.join(RETRY_TYPES)}")
        attempts = value.get("attempts")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
            self.fail(f"{path}.attempts", f"required: the number of attempts, the first included (1 to {MAX_ATTEMPTS})")
        if "interval" not in value:
            self.fail(f"{path}.interval", "required: a duration such as 2s")
        interval = self.duration(value, "interval", path, zero_ok=True)
        cap = self.duration(value, "maxInterval", path)
        if type_ == "constant" and cap is not None:
            self.fail(f"{path}.maxInterval", "applies to exponential and random retries only")
        if type_ == "random" and "maxInterval" not in value:
            self.fail(f"{path}.maxInterval", "required for a random retry: the longest wait")
        if cap is not None and interval is not None and cap < interval:
            self.fail(f"{path}.maxInterval", "must not be shorter than interval")
        max_duration = self.duration(value, "maxDuration", path)
        if len(self.errors) > before or interval is None:
            return None
        return RetryPolicy(type_, attempts, interval, cap, max_duration)

    # -- inputs --------------------------------------------------------------------------

    def inputs(self, value: Any) -> tuple[FlowInput, ...]:
        specs, problems = inputs_.declared(value)
        for path, message in problems:
            self.fail(path, message)
        return specs
