"""Reading a flow's YAML into the model: fields, nested task lists, durations, retry, and every
structural error with its path and line."""

from __future__ import annotations

import textwrap

import msgspec
import pytest

from app.errors import Invalid
from app.flows.durations import parse_duration
from app.flows.model import Flow, FlowError, FlowInvalid, RetryPolicy, load, parse


def flow_text(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def errors_of(text: str) -> list[FlowError]:
    with pytest.raises(FlowInvalid) as caught:
        load(flow_text(text))
    return caught.value.errors


def paths(text: str) -> dict[str, str]:
    return {e.path: e.message for e in errors_of(text)}


FULL = """
name: greet-and-store
namespace: production.team
description: Says hello, fetches items, stores them.
labels: {env: prod, tier: 1, critical: true}
inputs:
  - {name: who, type: string, default: world}
  - {name: n, type: integer, min: 1, max: 10, default: 3}
concurrency: {limit: 2}
timeout: 1h
tasks:
  - name: hello
    type: util.log
    description: a greeting
    properties: {message: "Hello {{ inputs.who }}"}
  - name: fetch
    type: http.request
    properties:
      url: https://api.example.com/items
      headers: {Authorization: "Bearer ${API_TOKEN}"}
    retry: {type: exponential, attempts: 3, interval: 500ms, maxInterval: 2s, maxDuration: 1m}
    timeout: 30s
    allowFailure: true
    runIf: "{{ inputs.n > 2 }}"
  - name: each
    type: flow.foreach
    properties:
      items: "{{ outputs.fetch.body.items }}"
      concurrency: 4
      tasks:
        - {name: save, type: kv.set, properties: {namespace: items, key: "{{ item.id }}", value: "{{ item }}"}}
  - name: branch
    type: flow.if
    properties:
      condition: "{{ inputs.n > 5 }}"
      then: [{name: big, type: util.log, properties: {message: big}}]
      else: [{name: small, type: util.log, properties: {message: small}}]
  - name: pick
    type: flow.switch
    properties:
      value: "{{ inputs.who }}"
      cases:
        red: [{name: on_red, type: util.log, properties: {message: r}}]
        1: [{name: on_one, type: util.log, properties: {message: one}}]
      default: [{name: other, type: util.log, properties: {message: other}}]
  - name: "off"
    type: util.noop
    disabled: true
outputs:
  count: "{{ outputs.fetch.body.items | length }}"
errors:
  - {name: alert, type: util.log, properties: {message: "failed: {{ execution.error }}"}}
finally:
  - {name: bye, type: util.log, properties: {message: bye}}
"""


def test_a_full_flow_reads_into_the_model() -> None:
    flow = load(flow_text(FULL))
    assert isinstance(flow, Flow)
    assert (flow.name, flow.namespace, flow.description) == ("greet-and-store", "production.team", "Says hello, fetches items, stores them.")
    assert flow.labels == {"env": "prod", "tier": "1", "critical": "true"}
    assert [(i.name, i.type, i.default) for i in flow.inputs] == [("who", "string", "world"), ("n", "integer", 3)]
    assert flow.concurrency_limit == 2 and flow.timeout_s == 3600
    assert flow.outputs == {"count": "{{ outputs.fetch.body.items | length }}"}
    assert [t.name for t in flow.errors] == ["alert"] and [t.name for t in flow.finally_] == ["bye"]

    hello, fetch, each, branch, pick, off = flow.tasks
    assert hello.description == "a greeting" and hello.path == "tasks[0]"
    assert fetch.retry == RetryPolicy("exponential", 3, 0.5, 2.0, 60.0)
    assert (fetch.timeout_s, fetch.allow_failure, fetch.run_if) == (30.0, True, "{{ inputs.n > 2 }}")
    assert fetch.properties["headers"] == {"Authorization": "Bearer ${API_TOKEN}"}
    assert off.disabled is True


def test_control_flow_tasks_keep_their_nested_lists_as_children() -> None:
    flow = load(flow_text(FULL))
    each, branch, pick = flow.tasks[2], flow.tasks[3], flow.tasks[4]
    assert each.properties == {"items": "{{ outputs.fetch.body.items }}", "concurrency": 4}  # `tasks` taken out
    assert [t.path for t in each.children["tasks"]] == ["tasks[2].properties.tasks[0]"]
    assert set(branch.properties) == {"condition"}
    assert [t.name for t in branch.children["then"]] == ["big"] and [t.name for t in branch.children["else"]] == ["small"]
    assert list(pick.children) == ["case:red", "case:1", "default"]
    assert pick.children["case:red"][0].path == "tasks[4].properties.cases.red[0]"
    assert pick.children["default"][0].path == "tasks[4].properties.default[0]"
    assert set(pick.properties) == {"value"}


def test_walk_gives_every_task_in_document_order() -> None:
    flow = load(flow_text(FULL))
    assert [t.name for t in flow.walk()] == [
        "hello", "fetch", "each", "save", "branch", "big", "small", "pick", "on_red", "on_one", "other", "off", "alert", "bye",
    ]
    assert flow.find("save") is flow.tasks[2].children["tasks"][0]
    assert flow.find("nope") is None


def test_a_minimal_flow_has_defaults() -> None:
    flow = load("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.noop}\n")
    task = flow.tasks[0]
    assert (task.properties, task.retry, task.timeout_s, task.allow_failure, task.run_if, task.disabled, task.children) == ({}, None, None, False, None, False, {})
    assert (flow.inputs, flow.errors, flow.finally_, flow.labels, flow.outputs) == ((), (), (), {}, {})
    assert flow.concurrency_limit is None and flow.timeout_s is None


def test_a_runif_written_as_a_boolean_is_kept_as_a_condition_text() -> None:
    flow = load("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.noop, runIf: false}\n")
    assert flow.tasks[0].run_if == "false"


def test_yaml_dates_stay_text() -> None:
    flow = load("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.log, properties: {message: 2024-05-01}}\n")
    assert flow.tasks[0].properties["message"] == "2024-05-01"


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("name: a\nnamespace: b\ntasks: [\n", 4, 1),
        ("name: a\n  namespace: b\n", 2, 12),
        ("name: a\ntasks:\n\t- x\n", 3, 1),
        ("name: [a, b\nnamespace: c\n", 2, 10),
    ],
)
def test_invalid_yaml_is_reported_with_line_and_column(text: str, line: int, column: int) -> None:
    flow, errors = parse(text)
    assert flow is None and len(errors) == 1
    assert errors[0].message.startswith("invalid YAML") and errors[0].path == ""
    assert (errors[0].line, errors[0].column) == (line, column)


def test_yaml_that_is_not_a_mapping_is_one_error() -> None:
    assert paths("- a\n- b\n") == {"": "a flow is a YAML mapping with at least name, namespace and tasks"}


def test_unsafe_yaml_tags_are_refused() -> None:
    (error,) = errors_of("name: !!python/object/apply:os.system ['true']\n")
    assert "could not determine a constructor" in error.message and error.line == 1


def test_alias_bombs_and_recursive_aliases_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5)
    )
    (error,) = errors_of(bomb)
    assert "aliases are expanded" in error.message
    (error,) = errors_of("a: &a [*a]\n")
    assert "refers to itself" in error.message


def test_missing_required_fields() -> None:
    assert paths("description: nothing\n") == {"name": "required", "namespace": "required", "tasks": "required: the list of tasks the flow runs"}
    assert paths("name: a\nnamespace: b\ntasks: []\n") == {"tasks": "must hold at least one task"}


def test_structural_errors_carry_their_path_and_line() -> None:
    errors = errors_of(
        """
        name: bad name
        namespace: ok
        tasks:
          - name: a
            type: util.log
            url: x
          - name: 1bad
            type: nope
          - type: util.log
          - just text
        """
    )
    found = {e.path: (e.line, e.message) for e in errors}
    assert found["name"][0] == 1 and "is not a valid name" in found["name"][1]
    assert found["tasks[0].url"][0] == 6 and "unknown field 'url'" in found["tasks[0].url"][1] and "properties" in found["tasks[0].url"][1]
    assert found["tasks[1].name"][0] == 7
    assert found["tasks[1].type"] == (8, "'nope' is not a plugin id (such as util.log)")
    assert found["tasks[2].name"] == (9, "required")
    assert found["tasks[3]"] == (10, "a task is a mapping with at least name and type")
    assert [e.line for e in errors] == sorted(e.line or 0 for e in errors)  # in the order of the text


def test_duplicate_task_names_anywhere_in_the_flow() -> None:
    found = paths(
        """
        name: a
        namespace: b
        tasks:
          - {name: x, type: util.noop}
          - name: loop
            type: flow.foreach
            properties:
              items: [1]
              tasks:
                - {name: x, type: util.noop}
        finally:
          - {name: loop, type: util.noop}
        """
    )
    assert "duplicate task name 'x' (also at tasks[0])" in found["tasks[1].properties.tasks[0].name"]
    assert "duplicate task name 'loop' (also at tasks[1])" in found["finally[0].name"]


def test_a_name_yaml_reads_as_a_boolean_says_to_quote_it() -> None:
    found = paths("name: a\nnamespace: b\ntasks:\n  - {name: off, type: util.noop}\n")
    assert "quote the name" in found["tasks[0].name"]


def test_duplicate_yaml_keys_are_an_error() -> None:
    (error,) = errors_of("name: a\nnamespace: b\nname: c\ntasks: [{name: x, type: util.noop}]\n")
    assert (error.path, error.line) == ("name", 3) and "duplicate key 'name'" in error.message


def test_control_flow_tasks_need_their_task_lists() -> None:
    found = paths(
        """
        name: a
        namespace: b
        tasks:
          - {name: s, type: flow.sequential}
          - {name: f, type: flow.foreach, properties: {items: [1], tasks: []}}
          - {name: i, type: flow.if, properties: {condition: "{{ true }}"}}
          - {name: w, type: flow.switch, properties: {value: x, cases: {}}}
          - {name: p, type: flow.parallel, properties: {tasks: "not a list"}}
          - name: w2
            type: flow.switch
            properties: {value: x, cases: {a: [{name: deep, type: util.noop, retry: 3}]}}
        """
    )
    assert found["tasks[0].properties.tasks"].startswith("required")
    assert found["tasks[1].properties.tasks"] == "must hold at least one task"
    assert found["tasks[2].properties.then"].startswith("required")
    assert found["tasks[3].properties.cases"].startswith("required")
    assert found["tasks[4].properties.tasks"] == "must be a list of tasks"
    assert found["tasks[5].properties.cases.a[0].retry"].startswith("must be a mapping")


@pytest.mark.parametrize(
    ("retry", "path", "message"),
    [
        ("{type: weird, attempts: 2, interval: 1s}", "retry.type", "must be one of constant, exponential, random"),
        ("{attempts: 0, interval: 1s}", "retry.attempts", "required: the number of attempts"),
        ("{attempts: true, interval: 1s}", "retry.attempts", "required: the number of attempts"),
        ("{attempts: 2}", "retry.interval", "required: a duration"),
        ("{attempts: 2, interval: soon}", "retry.interval", "not a duration"),
        ("{attempts: 2, interval: 1s, maxInterval: 5s}", "retry.maxInterval", "applies to exponential and random"),
        ("{type: random, attempts: 2, interval: 1s}", "retry.maxInterval", "required for a random retry"),
        ("{type: exponential, attempts: 2, interval: 5s, maxInterval: 1s}", "retry.maxInterval", "must not be shorter"),
        ("{attempts: 2, interval: 1s, maxDuration: 0s}", "retry.maxDuration", "must be longer than 0"),
        ("{attempts: 2, interval: 1s, backoffS: 2}", "retry.backoffS", "unknown field 'backoffS'"),
    ],
)
def test_bad_retry_policies(retry: str, path: str, message: str) -> None:
    found = paths(f"name: a\nnamespace: b\ntasks:\n  - {{name: x, type: util.noop, retry: {retry}}}\n")
    assert message in found[f"tasks[0].{path}"]


def test_bad_task_and_flow_fields() -> None:
    found = paths(
        """
        name: a
        namespace: b
        timeout: forever
        concurrency: {limit: 0}
        labels: {a: [1]}
        outputs: {"bad name": x}
        colour: blue
        tasks:
          - name: x
            type: util.noop
            timeout: -1s
            allowFailure: "yes"
            disabled: 1
            runIf: [1]
            properties: [1]
        errors: {name: y}
        """
    )
    assert "not a duration" in found["timeout"]
    assert found["concurrency.limit"].startswith("must be a whole number")
    assert "label" in found["labels.a"]
    assert "not a valid output name" in found["outputs.bad name"]
    assert "unknown field 'colour'" in found["colour"]
    assert "not a duration" in found["tasks[0].timeout"]
    assert found["tasks[0].allowFailure"] == "must be true or false"
    assert found["tasks[0].disabled"] == "must be true or false"
    assert "must be a condition" in found["tasks[0].runIf"]
    assert found["tasks[0].properties"] == "must be a mapping"
    assert found["errors"] == "must be a list of tasks"


def test_flow_invalid_is_a_422_with_every_error_as_data() -> None:
    with pytest.raises(FlowInvalid) as caught:
        load("name: a\n")
    exc = caught.value
    assert isinstance(exc, Invalid) and exc.status == 422
    assert exc.details == {"errors": [msgspec.to_builtins(e) for e in exc.errors]}
    assert "namespace: required" in exc.message and "(and 1 more)" in exc.message
    assert msgspec.json.decode(msgspec.json.encode(FlowError("tasks", "required"))) == {"path": "tasks", "message": "required"}


def test_parse_keeps_what_it_could_read_beside_the_errors() -> None:
    flow, errors = parse("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.log, retry: 5}\n  - {name: y, type: util.noop}\n")
    assert flow is not None and [t.name for t in flow.tasks] == ["x", "y"]
    assert [e.path for e in errors] == ["tasks[0].retry"]


# -- durations and retry delays ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5), ("2s", 2), ("1m", 60), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1m 30s", 90),
        ("1.5s", 1.5), ("30", 30), (45, 45), (0.25, 0.25), ("PT1M30S", 90), ("PT0.5S", 0.5), ("P1DT2H", 93600),
        ("pt2m", 120), ("P1W", 604800), ("0s", 0),
    ],
)
def test_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1s", "-5", "P", "PT", "P1Y", "P1M", "1h-30m", "inf", "nan", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_retry_delays() -> None:
    constant = RetryPolicy("constant", 3, 2.0)
    assert [constant.delay(a) for a in (1, 2)] == [2.0, 2.0]
    exponential = RetryPolicy("exponential", 6, 0.5, max_interval_s=3.0)
    assert [exponential.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RetryPolicy("exponential", 2000, 1.0).delay(1999) > 1e300  # no overflow error
    rand = RetryPolicy("random", 3, 1.0, max_interval_s=2.0)
    assert all(1.0 <= rand.delay(1) <= 2.0 for _ in range(50))


def test_next_delay_stops_at_the_last_attempt_and_at_max_duration() -> None:
    policy = RetryPolicy("constant", 3, 10.0, max_duration_s=25.0)
    assert policy.next_delay(1, elapsed_s=1.0) == 10.0
    assert policy.next_delay(2, elapsed_s=20.0) is None  # 20 + 10 passes 25
    assert RetryPolicy("constant", 3, 1.0).next_delay(3, elapsed_s=0.0) is None
