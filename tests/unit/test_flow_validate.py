"""Validation finds each class of error in a flow, with the right path (and line)."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from app.flows.model import FlowError
from app.flows.validate import PluginCatalog, validate


@dataclasses.dataclass(frozen=True)
class FakeManifest:
    """A stand-in for app.plugins' Manifest: what validation reads of it."""

    id: str
    input_schema: dict[str, Any]
    control: bool = False


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


MANIFESTS = [
    FakeManifest("util.log", obj({"message": {"type": "string"}, "level": {"enum": ["debug", "info", "warning", "error"]}}, ("message",))),
    FakeManifest("util.noop", obj({})),
    FakeManifest("util.set", obj({"value": {}}, ("value",))),
    FakeManifest("kv.set", obj({"namespace": {"type": "string"}, "key": {"type": "string"}, "value": {}}, ("namespace", "key", "value"))),
    FakeManifest(
        "http.request",
        obj(
            {
                "url": {"type": "string", "pattern": "^https?://"},
                "method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "auth": {"oneOf": [obj({"type": {"const": "basic"}, "username": {"type": "string"}}), obj({"type": {"const": "bearer"}, "token": {"type": "string"}})]},
            },
            ("url",),
        ),
    ),
    FakeManifest("flow.sequential", obj({}), control=True),
    FakeManifest("flow.parallel", obj({"concurrency": {"type": "integer", "minimum": 1}}), control=True),
    FakeManifest("flow.foreach", obj({"items": {"type": "array"}, "concurrency": {"type": "integer", "minimum": 1}}, ("items",)), control=True),
    FakeManifest("flow.loop_until", obj({"condition": {"type": ["string", "boolean"]}, "interval": {"type": ["string", "number"]}, "maxIterations": {"type": "integer"}, "maxDuration": {"type": ["string", "number"]}}, ("condition",)), control=True),
    FakeManifest("flow.if", obj({"condition": {"type": ["string", "boolean"]}}, ("condition",)), control=True),
    FakeManifest("flow.switch", obj({"value": {}}, ("value",)), control=True),
    FakeManifest("flow.sleep", obj({"duration": {"type": ["string", "number"]}}, ("duration",)), control=True),
    FakeManifest("flow.fail", obj({"message": {"type": "string"}}, ("message",)), control=True),
    FakeManifest(
        "flow.subflow",
        obj({"namespace": {"type": "string"}, "name": {"type": "string"}, "inputs": {"type": "object"}, "wait": {"type": "boolean"}}, ("namespace", "name")),
        control=True,
    ),
    FakeManifest(
        "flow.approval",
        obj(
            {
                "message": {"type": "string"},
                "form": {"type": "array"},
                "role": {"enum": ["viewer", "executor", "editor", "admin"]},
                "timeout": {"type": ["string", "number"]},
                "default": {"enum": ["approve", "reject"]},
            },
            ("message",),
        ),
        control=True,
    ),
]


class FakeCatalog:
    def __init__(self, manifests: list[FakeManifest], listing: bool = True) -> None:
        self.manifests = {m.id: m for m in manifests}
        if listing:
            self.all = lambda: list(self.manifests.values())

    def get(self, type_id: str) -> FakeManifest | None:
        return self.manifests.get(type_id)


CATALOG: PluginCatalog = FakeCatalog(MANIFESTS)


def check(body: str, catalog: PluginCatalog = CATALOG) -> list[FlowError]:
    return validate(textwrap.dedent(body).strip() + "\n", catalog)


def by_path(body: str) -> dict[str, str]:
    return {e.path: e.message for e in check(body)}


VALID = """
name: everything
namespace: tests
inputs:
  - {name: who, type: string, default: world}
  - {name: n, type: integer, default: 2}
  - {name: method, type: select, values: [GET, POST], default: GET}
tasks:
  - name: hello
    type: util.log
    properties: {message: "Hello {{ inputs.who }}", level: info}
  - name: fetch
    type: http.request
    properties:
      url: https://example.com/items
      method: "{{ inputs.method }}"
      timeout: "{{ inputs.n * 10 }}"
      headers: {Authorization: "Bearer ${API_TOKEN}"}
      auth: {type: bearer, token: "${API_TOKEN}"}
    retry: {type: constant, attempts: 3, interval: 1s}
    runIf: "{{ inputs.n > 1 }}"
  - name: each
    type: flow.foreach
    properties:
      items: "{{ outputs.fetch.body['items'] }}"
      concurrency: 2
      tasks:
        - name: check
          type: flow.if
          properties:
            condition: "{{ item.id > 1 and index < 10 }}"
            then:
              - {name: save, type: kv.set, properties: {namespace: items, key: "{{ item.id }}", value: "{{ item }}"}}
  - name: both
    type: flow.parallel
    properties:
      tasks:
        - {name: left, type: util.set, properties: {value: 1}}
        - {name: right, type: util.set, properties: {value: "{{ outputs['hello'] }}"}}
  - name: pick
    type: flow.switch
    properties:
      value: "{{ inputs.who }}"
      cases:
        world: [{name: w, type: util.noop}]
      default: [{name: d, type: flow.sleep, properties: {duration: 1s}}]
  - name: poll
    type: flow.loop_until
    properties:
      condition: "{{ kv('poll', 'done') }}"
      interval: 1s
      tasks: [{name: tick, type: util.noop}]
  - name: seq
    type: flow.sequential
    properties:
      tasks: [{name: inner, type: util.log, properties: {message: "{% for t in outputs.each.iterations %}{{ loop.index }}{% endfor %}"}}]
outputs:
  status: "{{ outputs.fetch.status }}"
  items: "{{ outputs.each.iterations | length }}"
errors:
  - {name: alert, type: util.log, properties: {message: "failed: {{ execution.error }} in {{ execution.name }}"}}
finally:
  - {name: bye, type: util.log, properties: {message: "{{ vars('f/x') }} bye"}}
"""


def test_a_valid_flow_gives_no_errors() -> None:
    assert check(VALID) == []


def test_invalid_yaml_is_one_error_with_line_and_column() -> None:
    errors = check("name: a\nnamespace: b\ntasks:\n  - name: x\n    type: [util.log\n")
    assert len(errors) == 1
    assert errors[0].path == "" and errors[0].message.startswith("invalid YAML")
    assert errors[0].line == 6 and errors[0].column == 1


def test_structure_and_plugins_are_reported_together() -> None:
    found = by_path(
        """
        name: a
        tasks:
          - {name: x, type: util.log, timeout: never, properties: {message: 5}}
          - {name: x, type: util.nope}
        """
    )
    assert found == {
        "namespace": "required",
        "tasks[0].timeout": "not a duration: 'never' (write e.g. 500ms, 30s, 5m, 1h30m or PT1M)",
        "tasks[0].properties.message": "5 is not of type 'string'",
        "tasks[1].name": "duplicate task name 'x' (also at tasks[0]): names are unique across the whole flow",
        "tasks[1].type": "unknown task type 'util.nope' (did you mean 'util.noop'?)",
    }


def test_unknown_plugin_types_anywhere() -> None:
    found = by_path(
        """
        name: a
        namespace: b
        tasks:
          - name: loop
            type: flow.foreach
            properties:
              items: [1]
              tasks: [{name: inner, type: slack.send}]
        errors:
          - {name: e, type: http.reqest, properties: {url: "https://x"}}
        """
    )
    assert found == {
        "tasks[0].properties.tasks[0].type": "unknown task type 'slack.send'",
        "errors[0].type": "unknown task type 'http.reqest' (did you mean 'http.request'?)",
    }


def test_a_catalog_that_cannot_list_gives_no_suggestion() -> None:
    errors = check("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.nop}\n", FakeCatalog(MANIFESTS, listing=False))
    assert [(e.path, e.message) for e in errors] == [("tasks[0].type", "unknown task type 'util.nop'")]


def test_properties_against_the_plugins_input_schema() -> None:
    found = by_path(
        """
        name: a
        namespace: b
        tasks:
          - {name: log, type: util.log, properties: {level: loud, colour: red}}
          - name: get
            type: http.request
            properties:
              url: ftp://example.com
              method: PATCH
              timeout: 0
              headers: {X-Count: 3}
              auth: {type: digest}
          - name: loop
            type: flow.foreach
            properties:
              items: {a: 1}
              concurrency: 0
              tasks: [{name: t, type: util.noop, properties: {extra: 1}}]
        """
    )
    assert found == {
        "tasks[0].properties.message": "required",
        "tasks[0].properties.level": "'loud' is not one of ['debug', 'info', 'warning', 'error']",
        "tasks[0].properties.colour": "unknown property 'colour' for util.log",
        "tasks[1].properties.url": "'ftp://example.com' does not match '^https?://'",
        "tasks[1].properties.method": "'PATCH' is not one of ['GET', 'POST', 'PUT', 'DELETE']",
        "tasks[1].properties.timeout": "0 is less than or equal to the minimum of 0",
        "tasks[1].properties.headers.X-Count": "3 is not of type 'string'",
        "tasks[1].properties.auth": found["tasks[1].properties.auth"],
        "tasks[2].properties.items": "{'a': 1} is not of type 'array'",
        "tasks[2].properties.concurrency": "0 is less than the minimum of 1",
        "tasks[2].properties.tasks[0].properties.extra": "unknown property 'extra' for util.noop",
    }
    assert "is not valid under any of the given schemas" in found["tasks[1].properties.auth"]


def test_templates_are_accepted_wherever_another_type_is_wanted() -> None:
    errors = check(
        """
        name: a
        namespace: b
        inputs: [{name: cfg, type: json}]
        tasks:
          - name: get
            type: http.request
            properties:
              url: "{{ inputs.cfg.url }}"
              method: "{{ inputs.cfg.method }}"
              timeout: "{{ inputs.cfg.timeout }}"
              headers: "{{ inputs.cfg.headers }}"
              auth: "{{ inputs.cfg.auth }}"
          - name: loop
            type: flow.foreach
            properties:
              items: "{{ inputs.cfg.list }}"
              concurrency: "${CONCURRENCY}"
              tasks: [{name: t, type: util.noop}]
        """
    )
    assert errors == []


def test_template_syntax_and_forbidden_templates_are_errors_at_their_path() -> None:
    found = by_path(
        """
        name: a
        namespace: b
        tasks:
          - name: x
            type: util.log
            properties: {message: "{{ oops"}
            runIf: "{% if %}"
          - name: y
            type: util.log
            properties: {message: "{{ ''.__class__.__mro__ }}"}
          - name: z
            type: http.request
            properties: {url: "https://x", headers: {A: "{{ inputs | attr('x') }}"}}
          - name: w
            type: util.set
            properties: {value: [1, {deep: "{{ 'a'.upper() }}"}]}
        outputs:
          o: "{{ lipsum }}"
        """
    )
    assert found["tasks[0].properties.message"].startswith("template syntax error")
    assert found["tasks[0].runIf"].startswith("template syntax error")
    assert "'__mro__' is not allowed" in found["tasks[1].properties.message"]
    assert "unknown filter 'attr'" in found["tasks[2].properties.headers.A"]
    assert "calling methods" in found["tasks[3].properties.value[1].deep"]
    assert "unknown name 'lipsum'" in found["outputs.o"]


def test_references_to_tasks_and_inputs_that_do_not_exist() -> None:
    found = by_path(
        """
        name: a
        namespace: b
        inputs: [{name: who, type: string}]
        tasks:
          - {name: first, type: util.log, properties: {message: "{{ inputs.who }} {{ inputs.whom }}"}}
          - {name: second, type: util.log, properties: {message: "{{ outputs.frist.value }}"}, runIf: "{{ outputs['no-such'] }}"}
          - {name: third, type: util.log, properties: {message: "{{ outputs.first }} {{ outputs.inner }}"}}
          - name: wrap
            type: flow.sequential
            properties:
              tasks: [{name: inner, type: util.noop}]
        outputs:
          out: "{{ outputs.ghost.value }}"
        """
    )
    assert found == {
        "tasks[0].properties.message": "inputs.whom: the flow has no input named 'whom'",
        "tasks[1].properties.message": "outputs.frist: the flow has no task named 'frist'",
        "tasks[1].runIf": "outputs.no-such: the flow has no task named 'no-such'",
        "outputs.out": "outputs.ghost: the flow has no task named 'ghost'",
    }


def test_item_and_index_only_inside_a_foreach() -> None:
    found = by_path(
        """
        name: a
        namespace: b
        tasks:
          - {name: early, type: util.log, properties: {message: "{{ item }}"}}
          - name: loop
            type: flow.foreach
            properties:
              items: "{{ [index] }}"
              tasks:
                - {name: fine, type: util.log, properties: {message: "{{ item }} {{ index }}"}, runIf: "{{ index > 0 }}"}
          - name: seq
            type: flow.sequential
            properties:
              tasks: [{name: late, type: util.log, properties: {message: "{{ index }}"}}]
        """
    )
    assert found == {
        "tasks[0].properties.message": "'item' is defined only inside the tasks of a flow.foreach or flow.loop_until",
        "tasks[1].properties.items": "'index' is defined only inside the tasks of a flow.foreach or flow.loop_until",
        "tasks[2].properties.tasks[0].properties.message": "'index' is defined only inside the tasks of a flow.foreach or flow.loop_until",
    }


def test_errors_carry_lines_and_come_in_the_order_of_the_text() -> None:
    errors = check(
        """
        name: a
        namespace: b
        tasks:
          - name: one
            type: util.log
            properties:
              message: "{{ outputs.nothing }}"
          - name: two
            type: util.nope
        outputs:
          x: "{{ inputs.none }}"
        """
    )
    assert [(e.path, e.line) for e in errors] == [("tasks[0].properties.message", 7), ("tasks[1].type", 9), ("outputs.x", 11)]
    assert all(e.column is not None for e in errors)


def test_a_plugin_with_a_broken_schema_is_reported_not_raised() -> None:
    broken = FakeCatalog([FakeManifest("util.odd", {"type": "no-such-type"})])
    errors = check("name: a\nnamespace: b\ntasks:\n  - {name: x, type: util.odd}\n", broken)
    assert [e.path for e in errors] == ["tasks[0].type"] and "invalid input schema" in errors[0].message


def test_a_document_that_is_not_a_mapping() -> None:
    assert [(e.path, e.line) for e in check("just text")] == [("", None)]


REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "flows.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", REFERENCE.read_text(), re.S)


def test_the_reference_has_an_example_for_every_construct() -> None:
    text = "\n".join(EXAMPLES)
    for construct in ("flow.sequential", "flow.parallel", "flow.if", "flow.switch", "flow.foreach", "flow.loop_until", "flow.subflow",
                      "flow.sleep", "flow.approval", "flow.fail", "retry:", "timeout:", "runIf:", "allowFailure:", "disabled:",
                      "outputs:", "errors:", "finally:", "concurrency:", "labels:", "${", "kv(", "vars(", "now()", "item", "index"):
        assert construct in text, construct
    for input_type in ("string", "integer", "number", "boolean", "select", "multiselect", "json", "datetime", "array", "secret"):
        assert f"type: {input_type}" in text, input_type


@pytest.mark.parametrize("example", EXAMPLES, ids=[re.search(r"name: (\S+)", e).group(1) for e in EXAMPLES])  # type: ignore[union-attr]
def test_every_example_in_the_reference_is_valid(example: str) -> None:
    assert validate(example, CATALOG) == []
