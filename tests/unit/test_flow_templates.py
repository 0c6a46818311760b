"""Flow templates: what they render, what they can reach (data only), and what they cost."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from app.flows.templating import Rendered, TemplateError, Templates

SCOPE: dict[str, Any] = {
    "inputs": {"who": "world", "n": 3, "flag": False, "tags": ["a", "b"]},
    "outputs": {
        "fetch": {"status": 200, "body": {"items": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], "text": "x"}},
        "big": {"list": list(range(1000))},
        "my-task": {"value": 7},
    },
    "execution": {"id": "e-1", "flowId": "f-1", "namespace": "ns", "name": "flow", "startedAt": "2024-05-01T10:00:00+00:00", "trigger": {"kind": "manual"}, "error": None},
}
CREDENTIALS = {"API_TOKEN": "tok-3141592653", "other": "other-secret"}
KV = {("config", "limit"): 10, ("config", "world"): {"deep": True}}
VARS = {"f/team/url": "https://example.com"}


class Lookups:
    """A lookup that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def __call__(self, kind: str, args: tuple[str, ...]) -> Any:
        self.calls.append((kind, args))
        if kind == "cred":
            return CREDENTIALS[args[0]]  # KeyError for an unknown one: the runner's lookup fails
        if kind == "kv":
            return KV.get((args[0], args[1]))
        if kind == "vars":
            if args[0] not in VARS:
                raise LookupError(f"no variable {args[0]}")
            return VARS[args[0]]
        raise AssertionError(kind)


T = Templates()


def render(value: Any, scope: dict[str, Any] | None = None, lookup: Lookups | None = None) -> Any:
    return asyncio.run(T.render(value, SCOPE if scope is None else scope, lookup or Lookups())).value


def failure(text: Any, scope: dict[str, Any] | None = None) -> str:
    with pytest.raises(TemplateError) as caught:
        render(text, scope)
    return caught.value.message


# -- what renders to what ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Hello {{ inputs.who }}", "Hello world"),
        ("{{ inputs.n }}", 3),
        ("{{ inputs.n + 1 }}", 4),
        ("{{ inputs.n > 2 }}", True),
        ("{{ inputs.tags }}", ["a", "b"]),
        ("{{ outputs.fetch.body }}", SCOPE["outputs"]["fetch"]["body"]),
        ("  {{ inputs.n }}\n", 3),  # blanks around one expression (YAML block scalars) are ignored
        ("{{ inputs.n }}{{ inputs.n }}", "33"),
        ("{{ none }}", None),
        ("{{ (1, 2) }}", [1, 2]),
        ("n={{ inputs.n }} flag={{ inputs.flag }} none={{ none }} list={{ inputs.tags }}", 'n=3 flag=false none= list=["a", "b"]'),
        ("{{ outputs.fetch.body['items'][1].name }}", "two"),
        ("{{ outputs.fetch.body.items.0.id }}", 1),
        ("{{ outputs['my-task'].value }}", 7),
        ("{{ execution.id }}/{{ execution.trigger.kind }}", "e-1/manual"),
        ("{% if inputs.n > 2 %}big{% else %}small{% endif %}", "big"),
        ("{% for t in inputs.tags %}{{ loop.index }}{{ t }}{% if not loop.last %},{% endif %}{% endfor %}", "1a,2b"),
        ("{% set x = inputs.n * 2 %}{{ x }}", "6"),
        ("{{ 'abc'[1:] }}", "bc"),
        ("no template at all", "no template at all"),
        ("{# a comment only #} text", "{# a comment only #} text"),  # no {{, {% or ${: not a template
    ],
)
def test_rendering(text: str, value: Any) -> None:
    assert render(text) == value


def test_dicts_and_lists_are_walked_and_keys_are_left_alone() -> None:
    value = {"{{ key }}": "{{ inputs.who }}", "list": [1, "{{ inputs.n }}", {"deep": "x{{ inputs.n }}"}], "n": 5, "b": True, "none": None}
    assert render(value) == {"{{ key }}": "world", "list": [1, 3, {"deep": "x3"}], "n": 5, "b": True, "none": None}


def test_a_set_stays_inside_its_own_string() -> None:
    with pytest.raises(TemplateError, match="'x' is undefined"):
        render({"a": "{% set x = 1 %}{{ x }}", "b": "{{ x }}"})


def test_item_and_index_come_from_the_scope() -> None:
    scope = {**SCOPE, "item": {"id": 9}, "index": 0}
    assert render("{{ item.id }}-{{ index }}", scope) == "9-0"


def test_undefined_names_and_keys_are_errors() -> None:
    assert "'nope' is undefined" in failure("{{ nope }}")
    assert "has no attribute 'missing'" in failure("{{ outputs.fetch.missing }}")
    assert "has no attribute 'later'" in failure("{{ outputs.later.body }}")
    assert "is undefined" in failure("x {{ item }}")
    assert "ZeroDivisionError" in failure("{{ 1 / 0 }}")
    assert failure("{{ inputs.tags[5] }}")


def test_an_undefined_value_inside_a_list_or_object_is_an_error_too() -> None:
    assert "'nope' is undefined" in failure("{{ [1, nope] }}")
    assert "'nope' is undefined" in failure("{{ {'a': {'b': nope}} }}")
    assert "has no attribute 'missing'" in failure("{{ outputs.fetch.body['items'] | map(attribute='missing') }}")
    assert "'nope' is undefined" in failure("text {{ [nope] }}")


def test_a_rendered_value_is_a_copy_of_the_data_it_came_from() -> None:
    value = render("{{ outputs.fetch.body }}")
    value["items"].append("changed")
    assert len(SCOPE["outputs"]["fetch"]["body"]["items"]) == 2


def test_default_covers_missing_and_null_values() -> None:
    assert render("{{ outputs.fetch.missing | default('d') }}") == "d"
    assert render("{{ execution.error | default('no error') }}") == "no error"
    assert render("{{ inputs.flag | default('x', true) }}") == "x"
    assert render("{{ outputs.fetch.missing is defined }}") is False


# -- kv, vars, now, credentials -----------------------------------------------------------


def test_kv_with_arguments_computed_at_render_time() -> None:
    lookups = Lookups()
    assert render("{{ kv('config', 'limit') + 1 }} {{ kv('config', inputs.who).deep }} {{ kv('config', 'none') }}", lookup=lookups) == "11 true "
    assert lookups.calls == [("kv", ("config", "limit")), ("kv", ("config", "world")), ("kv", ("config", "none"))]


def test_a_value_is_looked_up_once_per_render() -> None:
    lookups = Lookups()
    render({"a": "{{ kv('config', 'limit') }}", "b": "{{ kv('config', 'limit') }}", "c": "${API_TOKEN}${API_TOKEN}"}, lookup=lookups)
    assert sorted(lookups.calls) == [("cred", ("API_TOKEN",)), ("kv", ("config", "limit"))]


def test_vars_by_call_and_by_index() -> None:
    assert render("{{ vars('f/team/url') }}|{{ vars['f/team/url'] }}") == "https://example.com|https://example.com"
    assert "vars('f/none'): no variable f/none" in failure("{{ vars('f/none') }}")


def test_now_is_iso_text_in_utc() -> None:
    assert render("{{ now() }}").endswith("+00:00")
    assert render("{{ now() | date('%Y') }}").isdigit()


def test_credentials_render_and_are_reported_as_secrets() -> None:
    result = asyncio.run(T.render({"h": "Bearer ${API_TOKEN}", "raw": "${other}", "keep": "$${HOME} ${ spaced } ${1x}"}, SCOPE, Lookups()))
    assert isinstance(result, Rendered)
    assert result.value == {"h": "Bearer tok-3141592653", "raw": "other-secret", "keep": "${HOME} ${ spaced } ${1x}"}
    assert result.secrets == {"tok-3141592653", "other-secret"}


def test_a_credential_inside_an_expression_string_is_not_looked_up() -> None:
    assert render("{{ '${API_TOKEN}' }}") == "${API_TOKEN}"


def test_a_credential_in_data_is_never_looked_up() -> None:
    scope = {**SCOPE, "outputs": {"evil": {"body": "${API_TOKEN}"}}}
    lookups = Lookups()
    assert render("got {{ outputs.evil.body }}", scope, lookups) == "got ${API_TOKEN}"
    assert lookups.calls == []


def test_unknown_credentials_and_failing_lookups_are_template_errors() -> None:
    assert "${MISSING}" in failure("x ${MISSING}")


def test_errors_mask_the_credentials_already_fetched() -> None:
    message = failure("${API_TOKEN} {{ ('${API_TOKEN}' ~ 'x') | int }}")
    assert "tok-3141592653" not in message


def test_the_loop_budget_starts_over_when_a_lookup_renders_again() -> None:
    text = "{% for a in outputs.big.list %}{% for b in outputs.big.list[:60] %}{% endfor %}{% endfor %}{{ kv('config', 'limit') }}"
    assert render(text) == "10"  # 61,000 iterations, rendered twice


def test_lookups_are_bounded() -> None:
    many = "".join(f"{{{{ kv('ns', '{i}') }}}}" for i in range(60))
    assert "more than 50" in failure(many)


# -- conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ inputs.n > 2 }}", True), ("{{ inputs.n > 5 }}", False), ("{{ inputs.tags }}", True), ("{{ [] }}", False),
        ("{{ none }}", False), ("{{ 0 }}", False), ("true", True), ("false", False), ("False", False), ("no", False),
        ("", False), ("{{ 'false' }}", False), ("{{ inputs.who }}", True), ("x{{ inputs.flag }}", True), (" {{ inputs.flag }} ", False),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    assert asyncio.run(T.condition(text, SCOPE, Lookups())) is expected


# -- check and references -----------------------------------------------------------------


def test_check() -> None:
    assert T.check("plain text") is None
    assert T.check("Hello {{ inputs.who | upper }}") is None
    assert T.check("{% for x in inputs.tags %}{{ x }}{{ loop.index }}{% endfor %}") is None
    assert T.check("{% set total = inputs.n %}{{ total }}") is None
    assert "syntax error" in (T.check("{{ inputs.who ") or "")
    assert "syntax error" in (T.check("{% if %}") or "")
    assert "unknown filter 'shout'" in (T.check("{{ inputs.who | shout }}") or "")
    assert "unknown test 'callable'" in (T.check("{{ inputs is callable }}") or "")
    assert "unknown name 'input'" in (T.check("{{ input.who }}") or "")
    assert "kv() is called as kv('namespace', 'key')" in (T.check("{{ kv('a') }}") or "")
    assert "'inputs' cannot be set" in (T.check("{% set inputs = 1 %}") or "")
    assert "too long" in (T.check("{{ 1 }}" + "x" * 100_001) or "")


@pytest.mark.parametrize(
    "text",
    ["{{ " + "a." * 5000 + "b }}", "{{ " + "+".join(["1"] * 5000) + " }}", "{{ " + "[" * 3000 + "]" * 3000 + " }}", "{% if x %}" * 2000],
)
def test_deeply_nested_templates_are_refused_not_crashing(text: str) -> None:
    assert "nested too deeply" in (T.check(text) or "")
    assert "nested too deeply" in failure(text)


def test_deeply_nested_values_are_refused_not_crashing() -> None:
    value: Any = "{{ inputs.n }}"
    for _ in range(5000):
        value = [value]
    assert "nested too deeply" in failure(value)


def test_references() -> None:
    text = "{{ outputs.fetch.body }} {{ outputs['my-task'].value }} {{ inputs.who }} ${API_TOKEN} $${NOT_ONE} {{ item }}"
    assert T.references(text) == {("outputs", "fetch"), ("outputs", "my-task"), ("inputs", "who"), ("cred", "API_TOKEN")}
    assert T.names(text) == {"outputs", "inputs", "item"}
    assert T.references("no template") == set()


# -- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{{ outputs.fetch.body.items | json }}", '[{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]'),
        ("{{ inputs | tojson }}", '{"who": "world", "n": 3, "flag": false, "tags": ["a", "b"]}'),
        ('{{ \'{"a": [1]}\' | fromjson }}', {"a": [1]}),
        ("{{ inputs.tags | length }}", 2),
        ("{{ inputs.tags | count }}", 2),
        ("{{ inputs.who | upper }}|{{ 'ABC' | lower }}|{{ 'a b' | title }}|{{ 'ab' | capitalize }}|{{ '  x ' | trim }}", "WORLD|abc|A B|Ab|x"),
        ("{{ inputs.tags | join(', ') }}", "a, b"),
        ("{{ outputs.fetch.body.items | join(',', attribute='name') }}", "one,two"),
        ("{{ inputs.tags | first }}{{ inputs.tags | last }}", "ab"),
        ("{{ '42' | int + 1 }}", 43), ("{{ '4.7' | int }}", 4), ("{{ 'x' | int(default=0) }}", 0), ("{{ '1.5' | float }}", 1.5),
        ("{{ 3 | string }}", "3"), ("{{ 2.567 | round(1) }}", 2.6), ("{{ -3 | abs }}", 3),
        ("{{ 'a-b-c' | replace('-', '+') }}", "a+b+c"), ("{{ 'a,b' | split(',') }}", ["a", "b"]),
        ("{{ '2024-05-01T10:20:30Z' | date('%Y/%m/%d %H:%M') }}", "2024/05/01 10:20"),
        ("{{ 0 | date }}", "1970-01-01T00:00:00+00:00"),
        ("{{ {'b': 1, 'a': 2} | keys }}", ["b", "a"]), ("{{ {'b': 1} | values }}", [1]), ("{{ {'b': 1} | items }}", [["b", 1]]),
        ("{{ [3, 1, 2] | sort }}", [1, 2, 3]), ("{{ outputs.fetch.body.items | sort(attribute='name', reverse=true) | map(attribute='id') }}", [2, 1]),
        ("{{ [1, 2, 1] | unique }}", [1, 2]), ("{{ [3, 1] | min }}{{ [3, 1] | max }}{{ [3, 1] | sum }}", "134"),
        ("{{ outputs.fetch.body.items | sum(attribute='id') }}", 3),
        ("{{ [1, 2, 3, 4] | select('even') }}", [2, 4]), ("{{ [1, 2, 3] | reject('odd') }}", [2]),
        ("{{ outputs.fetch.body.items | selectattr('id', 'gt', 1) | map(attribute='name') }}", ["two"]),
        ("{{ outputs.fetch.body.items | rejectattr('id', 'eq', 1) | length }}", 1),
        ("{{ [1, 2] | map('string') }}", ["1", "2"]), ("{{ 'ab' | list }}", ["a", "b"]), ("{{ [1, 2] | reverse }}", [2, 1]),
        ("{{ {'q': 'a b'} | urlencode }}", "q=a+b"), ("{{ 'user:pass' | b64encode }}", "dXNlcjpwYXNz"), ("{{ 'dXNlcjpwYXNz' | b64decode }}", "user:pass"),
        ("{{ 4 is even }}{{ none is none }}{{ 'a' in inputs.tags }}{{ inputs is mapping }}", "truetruetruetrue"),
    ],
)
def test_filters(text: str, value: Any) -> None:
    assert render(text) == value


# -- templates never reach Python ---------------------------------------------------------

CANARY = "/tmp/flowmill-ssti-canary"

# (payload, found by check() before anything runs)
PAYLOADS: list[tuple[str, bool]] = [
    ("{{ ''.__class__.__mro__ }}", True),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", True),
    ("{{ ().__class__.__base__.__subclasses__() }}", True),
    ("{{ cycler.__init__.__globals__.os.popen('touch " + CANARY + "').read() }}", True),
    ("{{ joiner.__init__.__globals__ }}", True),
    ("{{ namespace.__init__.__globals__ }}", True),
    ("{{ lipsum }}", True),
    ("{{ lipsum.__globals__['os'].popen('touch " + CANARY + "') }}", True),
    ("{{ self }}", True),
    ("{{ self._TemplateReference__context }}", True),
    ("{{ config }}", True),
    ("{{ config.items() }}", True),
    ("{{ request }}", True),
    ("{{ request.application.__globals__.__builtins__ }}", True),
    ("{% import 'os' as os %}{{ os.system('touch " + CANARY + "') }}", True),
    ("{% from 'os' import system %}", True),
    ("{% include '/etc/passwd' %}", True),
    ("{% extends '/etc/passwd' %}", True),
    ("{% macro m() %}x{% endmacro %}{{ m() }}", True),
    ("{% call kv('a', 'b') %}x{% endcall %}", True),
    ("{% filter upper %}x{% endfilter %}", True),
    ("{% set x %}{{ inputs }}{% endset %}", True),
    ("{{ ''|attr('__class__') }}", True),
    ("{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}", True),
    ("{{ request|attr('application') }}", True),
    ("{{ 'a'.upper() }}", True),
    ("{{ [].pop() }}", True),
    ("{{ outputs.fetch.keys() }}", True),
    ("{{ outputs.fetch.items() }}", True),
    ("{{ upper('x') }}", True),
    ("{{ range(10**9) }}", True),
    ("{{ dict(a=1) }}", True),
    ("{{ '{0.__class__}'.format('') }}", True),
    ("{{ '%s' | format(inputs) }}", True),
    ("{{ kv.__globals__ }}", True),
    ("{{ now.__globals__ }}", True),
    ("{{ vars.__call__ }}", True),
    ("{{ kv }}", True),
    ("{{ item['__class__'] }}", True),
    ("{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", True),
    ("{% for x in [1] %}{{ loop.cycle.__globals__ }}{% endfor %}", True),
    ("{% autoescape false %}x{% endautoescape %}", True),
    ("{{ _private }}", True),
    # not visible before running: refused when rendered
    ("{{ [].pop }}", False),
    ("{{ outputs.fetch.keys }}", False),
    ("{{ inputs.who.upper }}", False),
    ("{{ inputs.tags.append }}", False),
    ("{{ outputs.fetch.body.items[0].__class__ if false else inputs.who.__len__ }}", True),
    ("{{ inputs.who['__class__'] }}", True),
    ("{{ inputs.who[('_' ~ '_class_' ~ '_')] }}", False),
    ("{{ outputs | map('attr', '__class__') | list }}", False),
    ("{{ outputs | selectattr('__class__') | list }}", False),
    ("{{ outputs.fetch.body.items | map(attribute='__class__') | first }}", False),
    ("{% for x in [1] %}{{ loop.cycle }}{% endfor %}", False),
    ("{% for x in [1] %}{{ [loop] }}{% endfor %}", False),
    ("{% for x in [1] %}{% set l = loop %}{{ l[('_' ~ '_class_' ~ '_')] }}{% endfor %}", False),
    ("{{ [kv] }}", True),
    ("{{ [vars] }}", True),
    ("{% for x in outputs recursive %}{{ loop(x) }}{% endfor %}", True),
    ("{% set ns.x = 1 %}", True),
    ("{{ '%s' % inputs }}", False),
    ("{{ '%.999999999f' % 1 }}", False),
    ("{{ 'a' * 10**9 }}", False),
    ("{{ [1] * 10**9 }}", False),
    ("{{ 99999 ** 99999 }}", False),
    ("{{ 2 ** 100000 }}", False),
    ("{% set a = 'a' * 999999 %}{{ a ~ a }}", False),
    ("{% set a = 'a' * 500000 %}{% set b = a + a + a %}", False),
    ("{{ ('a' * 900000) | replace('a', 'aa') }}", False),
    ("{% for a in outputs.big.list %}{% for b in outputs.big.list %}{% endfor %}{% endfor %}", False),
    ("{% for a in outputs.big.list %}{{ 'x' * 5000 }}{% endfor %}", False),
    ("{{ outputs.big.list | join('x' * 999999) }}", False),
    ("{{ outputs.big.list | json(indent=1000000) }}", False),
    ("{{ 5 | round(-1000000000) }}", False),
    ("{{ ('[' * 99999) | fromjson }}", False),
]


@pytest.mark.parametrize(("payload", "static"), PAYLOADS)
def test_templates_never_reach_python(payload: str, static: bool) -> None:
    problem = T.check(payload)
    assert (problem is not None) is static, problem
    with pytest.raises(TemplateError):
        render(payload)
    assert not os.path.exists(CANARY)


def test_there_are_plenty_of_payloads() -> None:
    assert len(PAYLOADS) >= 20


def test_values_are_not_mutable_from_a_template() -> None:
    scope = {"inputs": {"tags": ["a"]}, "outputs": {}}
    with pytest.raises(TemplateError):
        render("{{ inputs.tags.append('b') }}", scope)
    assert scope["inputs"]["tags"] == ["a"]


# -- cost ---------------------------------------------------------------------------------


def forty_tasks() -> list[dict[str, Any]]:
    return [
        {"message": f"task {i}: hello {{{{ inputs.who }}}}", "n": "{{ inputs.n + 1 }}", "url": "https://example.com/a", "list": [1, "{{ outputs.fetch.status }}"], "headers": {"X-A": "plain"}}
        for i in range(40)
    ]


SIMPLE = [
    "{{ inputs.who }}", "{{ outputs.fetch.body }}", "{{ outputs.fetch.body['items'][1].name }}", "{{ outputs.fetch.body.items.0 }}",
    "{{ inputs.tags }}", "{{ execution.error }}", "{{ inputs.flag }}", "a {{ inputs.flag }} b {{ execution.error }} c {{ inputs.tags }}",
    "{{ outputs['my-task'].value }}/{{ inputs.n }}", "${API_TOKEN}", "x ${API_TOKEN} $${NOT} {{ inputs.who }}",
    "{{ nope }}", "x {{ outputs.fetch.nope }}", "{{ inputs.who.upper }}", "{{ inputs.tags[9] }}", "{{ outputs.fetch.body.items.x }}",
]


@pytest.mark.parametrize("text", SIMPLE)
def test_simple_templates_are_read_without_compiling_and_as_jinja_would(text: str) -> None:
    templates = Templates()
    assert templates._compiled(text).template is None  # read directly
    native = text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1
    # the same template, made too complex for the direct reading: compiled by Jinja
    compiled = text.replace("}}", "if true else none }}") if native else "{% if true %}" + text + "{% endif %}"
    assert templates._compiled(compiled).template is not None

    def outcome(source: str) -> Any:
        try:
            return asyncio.run(templates.render(source, SCOPE, Lookups())).value
        except TemplateError as exc:
            return ("error", exc.message)

    assert outcome(text) == outcome(compiled)


def test_plain_strings_do_not_go_through_jinja() -> None:
    templates = Templates()
    asyncio.run(templates.render({"a": "plain", "b": ["x", {"c": "y"}], "d": 5}, SCOPE, Lookups()))
    assert templates._compiled.cache_info().currsize == 0


def test_compiled_templates_are_cached_by_text() -> None:
    templates = Templates()
    for _ in range(3):
        asyncio.run(templates.render("{{ inputs.n }}", SCOPE, Lookups()))
    info = templates._compiled.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_rendering_forty_tasks_takes_well_under_10_ms() -> None:
    templates = Templates()
    tasks = forty_tasks()

    async def all_tasks() -> float:
        started = time.perf_counter()
        for properties in tasks:
            await templates.render(properties, SCOPE, Lookups())
        return time.perf_counter() - started

    async def measure() -> tuple[float, float]:
        cold = await all_tasks()
        return cold, min([await all_tasks() for _ in range(5)])

    cold, warm = asyncio.run(measure())
    assert warm < 0.01, f"40 tasks rendered in {warm * 1000:.2f} ms"
    assert cold < 0.1, f"40 tasks rendered in {cold * 1000:.2f} ms, their 81 templates compiled"


# -- fuzzing: any text is data in, data out, or a TemplateError --------------------------------

FRAGMENTS = [
    "{{", "}}", "{%", "%}", " ", "inputs", "outputs", "execution", "item", "fetch", "body", "who", "tags", ".", "[", "]", "(", ")",
    ",", "'a'", "'_'", "0", "1", "10", "-1", "|", "~", "+", "*", "**", "%", "/", "==", "and", "not", "if", "else", "endif", "for", "in",
    "endfor", "set", "=", "x", "loop", "index", "kv", "vars", "now", "upper", "join", "map", "attribute=", "default", "json", "int",
    "replace", "first", "attr", "format", "range", "lipsum", "cycler", "self", "config", "__class__", "__mro__", "__globals__",
    "__init__", "__subclasses__", "import", "include", "os", "${API_TOKEN}", "$${X}", "raw", "endraw", "macro", "call",
]


def test_any_text_renders_to_data_or_a_template_error() -> None:
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    fragments = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12)
    texts = st.one_of(fragments.map("".join), fragments.map(lambda parts: "{{ " + " ".join(parts) + " }}"))

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(texts)
    def one(text: str) -> None:
        problem = T.check(text)
        assert problem is None or isinstance(problem, str)
        try:
            value = render(text)
        except TemplateError:
            return
        json.dumps(value)  # plain data only
        assert not os.path.exists(CANARY)

    one()
