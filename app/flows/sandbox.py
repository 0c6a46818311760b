"""The Jinja2 environment flow templates run in: data in, data out, nothing else reachable.

Jinja's `ImmutableSandboxedEnvironment` is the base (kept by the Pallets team, with a record of
fixed escapes); on top of it this one narrows what a template can touch to plain data:

- `.name` and `[key]` read dict keys, list items and text characters, nothing else: no
  attribute of any Python object (`''.__class__`, `[].pop`, `outputs.x.keys` is the key `keys`);
- nothing can be called but `kv(ns, key)`, `vars(path)` and `now()`: no method, no filter used
  as a function, no Jinja global (`range`, `lipsum`, `cycler`, `joiner`, `namespace` are gone);
- only the filters and tests of `filters.py`;
- `{% import %}`, `{% include %}`, `{% extends %}`, `{% macro %}`, `{% call %}`, `{% block %}`,
  `{% filter %}` and `{% set %}...{% endset %}` blocks are refused before compiling, as are
  names starting with `_` and `self`;
- resources are bounded: `*`, `**`, `+` and `~` refuse to build huge values, `%` does not
  format text, loops share a budget of iterations per render, and the output has a size cap.

The checks run on the parsed template (see `prepare`), so a refused construct never reaches
the compiler; the overrides below hold at run time whatever the template became.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import re
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from app.flows import filters

ROOTS = frozenset({"inputs", "outputs", "execution", "trigger", "item", "index"})  # the data in scope
FUNCTIONS = {"kv": 2, "vars": 1, "now": 0}  # name -> number of arguments
LOOP_FIELDS = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0", "previtem", "nextitem"}
)
MAX_LOOPS = 100_000  # loop iterations in one render
MAX_INT_BITS = 8192  # a template's arithmetic stays within numbers this big
MAX_SOURCE = 100_000  # characters of template text
# ${NAME} (a credential's name as app/services/credentials.py allows it); $${NAME} writes ${NAME}
CREDENTIAL = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]{0,199})\}")
_CRED_FUNCTION = "__credential"  # the name ${NAME} compiles to (users cannot write `_` names)

_FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Include: "{% include %}",
    nodes.Extends: "{% extends %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Block: "{% block %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.AssignBlock: "a {% set %}...{% endset %} block",
    nodes.NSRef: "assigning to an attribute",
    nodes.ExprStmt: "{% do %}",
    nodes.EvalContextModifier: "{% autoescape %}",
}


class NeedLookup(Exception):
    """Raised inside a render for a kv/vars/credential value not fetched yet: the caller awaits
    the lookup and renders again (templates render synchronously; lookups are async)."""

    def __init__(self, kind: str, args: tuple[str, ...]) -> None:
        super().__init__(kind, args)
        self.kind = kind
        self.args_ = args


@dataclasses.dataclass
class RenderState:
    """What one `Templates.render` call has learnt: fetched values, secrets, loop budget."""

    fetched: dict[tuple[str, tuple[str, ...]], Any] = dataclasses.field(default_factory=dict)
    secrets: set[str] = dataclasses.field(default_factory=set)
    loops: int = 0


STATE: contextvars.ContextVar[RenderState] = contextvars.ContextVar("flow_template_state")


def _fetched(kind: str, args: tuple[str, ...]) -> Any:
    if not all(isinstance(arg, str) for arg in args):
        raise SecurityError(f"{kind}() takes text arguments")
    state = STATE.get()
    try:
        return state.fetched[(kind, args)]
    except KeyError:
        raise NeedLookup(kind, args) from None


def kv(namespace: str, key: str) -> Any:
    """The value of KV entry `key` in `namespace`, or null."""
    return _fetched("kv", (namespace, key))


class Variables:
    """`vars('path')` and `vars['path']`: a variable's value."""

    def __call__(self, path: str) -> Any:
        return _fetched("vars", (path,))


def now() -> str:
    """The current time, ISO-8601 in UTC."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def credential(name: str) -> str:
    """What `${NAME}` compiles to: the credential's clear value, noted as a secret to mask."""
    value = _fetched("cred", (name,))
    STATE.get().secrets.add(value)
    return str(value)


@pass_context  # a context filter is never run at compile time (constant folding): it needs the state
def _loop_budget(context: Context, iterable: Any) -> list[Any] | tuple[Any, ...]:
    """What a `{% for %}` iterates over, counted against the render's budget of iterations."""
    items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
    state = STATE.get()
    state.loops += len(items)
    if state.loops > MAX_LOOPS:
        raise SecurityError(f"a template looped more than {MAX_LOOPS} times")
    return items


class DataEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox in which templates see plain data and the documented functions only."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined, autoescape=False, finalize=filters.as_text, keep_trailing_newline=True, cache_size=0
        )
        self.variables = Variables()
        self.globals.clear()
        self.globals.update({"kv": kv, "vars": self.variables, "now": now, _CRED_FUNCTION: credential})
        self.filters = {**filters.FILTERS, "_sized": filters.sized, "_loop_budget": _loop_budget}
        self.tests = dict(filters.TESTS)
        self.callables = (kv, self.variables, now, credential)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return isinstance(obj, LoopContext) and attr in LOOP_FIELDS

    def is_safe_callable(self, obj: Any) -> bool:
        return any(obj is allowed for allowed in self.callables)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        if not __self.is_safe_callable(__obj):
            raise SecurityError("templates call only kv(namespace, key), vars(path) and now()")
        return __context.call(__obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, LoopContext) and attribute in LOOP_FIELDS:
            return getattr(obj, attribute)
        return self._not_data(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=argument)
        if isinstance(obj, (list, tuple, str)) and isinstance(argument, (int, slice)) and not isinstance(argument, bool):
            try:
                return obj[argument]
            except (IndexError, TypeError):
                return self.undefined(obj=obj, name=argument)
        if obj is self.variables and isinstance(argument, str):
            return self.variables(argument)
        return self._not_data(obj, argument)

    def _not_data(self, obj: Any, name: Any) -> Any:
        if isinstance(obj, Undefined):
            return obj  # the first missing name is the one worth reporting
        kinds = {str: "a text", list: "a list", tuple: "a list", int: "a number", float: "a number", bool: "a boolean"}
        kind = kinds.get(type(obj), "this value")
        hint = f"cannot read {name!r} of {kind}: '.' and [] read object keys and list items only"
        return self.undefined(hint, obj=obj, name=str(name), exc=SecurityError)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' does not format text in a template; join text with ~")
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        return filters.sized(self.binop_table[operator](left, right))


def _check_product(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            limit = filters.MAX_TEXT if isinstance(seq, str) else filters.MAX_ITEMS
            if len(seq) * times > limit:
                raise SecurityError("a template made a value too large")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise SecurityError("a template made a number too large")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * base.bit_length() > MAX_INT_BITS:
            raise SecurityError("a template made a number too large")


@dataclasses.dataclass
class Analysis:
    """What a parsed template does, found before it is compiled."""

    forbidden: str | None = None  # a construct that is never allowed
    unknown: str | None = None  # a name that is not in scope (check() reports it; render leaves it to StrictUndefined)
    names: set[str] = dataclasses.field(default_factory=set)  # root names read
    # ("outputs", task), ("inputs", name), ("cred", NAME): what the template reads by a name written in it
    references: set[tuple[str, str]] = dataclasses.field(default_factory=set)


def analyse(tree: nodes.Template) -> Analysis:
    """Look at every node of `tree` for forbidden constructs and the names it reads."""
    found = Analysis()
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    _visit(tree, None, found)
    for data in tree.find_all(nodes.TemplateData):
        for match in CREDENTIAL.finditer(data.data):
            if not match.group(1):
                found.references.add(("cred", match.group(2)))
    if found.forbidden is None:
        reserved = stored & (ROOTS | set(FUNCTIONS))
        if reserved:
            found.forbidden = f"'{sorted(reserved)[0]}' cannot be set or used as a loop variable in a template"
    unknown = sorted(found.names - ROOTS - set(FUNCTIONS) - stored - {"loop"})
    if unknown:
        found.unknown = (
            f"unknown name '{unknown[0]}': templates read inputs, outputs, execution, trigger, item, index, kv(), vars() and now()"
        )
    return found


def _visit(node: nodes.Node, parent: nodes.Node | None, found: Analysis) -> None:
    problem = _problem(node, parent, found)
    if problem is not None and found.forbidden is None:
        found.forbidden = problem
    for child in node.iter_child_nodes():
        _visit(child, node, found)


def _problem(node: nodes.Node, parent: nodes.Node | None, found: Analysis) -> str | None:
    """What is wrong with `node` itself, if anything; notes the names it reads on the way."""
    for kind, what in _FORBIDDEN.items():
        if isinstance(node, kind):
            return f"{what} is not allowed in a flow template"
    if isinstance(node, nodes.Name):
        if node.name.startswith("_") or node.name == "self":
            return f"the name '{node.name}' is not allowed in a flow template"
        if node.ctx == "load":
            found.names.add(node.name)
            called = isinstance(parent, nodes.Call) and parent.node is node
            indexed = node.name == "vars" and isinstance(parent, nodes.Getitem) and parent.node is node
            if node.name in FUNCTIONS and not (called or indexed):
                return f"'{node.name}' is a function: call it, as in {_usage(node.name)}"
    elif isinstance(node, (nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(key, str) and key.startswith("_"):
            return f"the name '{key}' is not allowed in a flow template (names starting with '_' are Python's)"
        if isinstance(node.node, nodes.Name) and node.node.name in ("outputs", "inputs") and isinstance(key, str):
            found.references.add((node.node.name, key))
    elif isinstance(node, nodes.Call):
        callee = node.node.name if isinstance(node.node, nodes.Name) else None
        if callee not in FUNCTIONS:
            return (
                "calling methods or filters as functions is not allowed: templates call only kv(ns, key), vars(path)"
                " and now(); use filters with |"
            )
        if node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) != FUNCTIONS[callee]:
            return f"{callee}() is called as {_usage(callee)}"
    elif isinstance(node, (nodes.Filter, nodes.Test)):
        table = filters.FILTERS if isinstance(node, nodes.Filter) else filters.TESTS
        if node.name not in table:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            return f"unknown {kind} '{node.name}' (the {kind}s: {', '.join(sorted(table))})"
    return None


def _usage(name: str) -> str:
    return {"kv": "kv('namespace', 'key')", "vars": "vars('path') or vars['path']", "now": "now()"}[name]


def native_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is one `{{ expr }}` (surrounding blanks aside): it
    renders to the expression's value, a list staying a list. None for any other template."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    return None


@dataclasses.dataclass(frozen=True)
class Path:
    """`name.key[0]...`: a read of data simple enough to need no compiled code."""

    name: str
    keys: tuple[tuple[bool, str | int], ...]  # (read as .attribute, key), in order

    def read(self, env: DataEnvironment, names: dict[str, Any]) -> Any:
        """The value at this path, through the environment's own getattr/getitem (so exactly
        as a compiled template would read it)."""
        value = names[self.name] if self.name in names else env.undefined(name=self.name)
        for attribute, key in self.keys:
            value = env.getattr(value, key) if attribute else env.getitem(value, key)  # type: ignore[arg-type]
        return value


@dataclasses.dataclass(frozen=True)
class Credential:
    """`${NAME}` in a template's text."""

    name: str


Part = str | Path | Credential


def simple_parts(tree: nodes.Template) -> tuple[Part, ...] | None:
    """The pieces of a guarded template made only of text, data paths and credentials, as most
    are (`"Hello {{ inputs.who }}"`, `"{{ outputs.fetch.body }}"`, `"Bearer ${TOKEN}"`): these
    are read directly, which spares compiling Python code for them. None for any other."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[Part] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == _CRED_FUNCTION:
            parts.append(Credential(node.args[0].value))  # type: ignore[attr-defined]
        else:
            path = _path(node)
            if path is None:
                return None
            parts.append(path)
    return tuple(parts)


def _path(node: nodes.Node) -> Path | None:
    keys: list[tuple[bool, str | int]] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            keys.append((True, node.attr))
        elif isinstance(node.arg, nodes.Const) and type(node.arg.value) in (str, int):
            keys.append((False, node.arg.value))
        else:
            return None
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return Path(node.name, tuple(reversed(keys)))
    return None


class Guard(NodeTransformer):
    """Rewrites a checked template for run time: `${NAME}` in its text becomes a credential
    lookup, each loop counts against the render's budget, each `~` checks its size."""

    def visit_TemplateData(self, node: nodes.TemplateData) -> nodes.Node | list[nodes.Node]:
        if "${" not in node.data:
            return node
        parts: list[nodes.Node] = []
        at = 0
        for match in CREDENTIAL.finditer(node.data):
            text = node.data[at : match.start()] + ("${" + match.group(2) + "}" if match.group(1) else "")
            if text:
                parts.append(nodes.TemplateData(text, lineno=node.lineno))
            if not match.group(1):
                function = nodes.Name(_CRED_FUNCTION, "load", lineno=node.lineno)
                name = nodes.Const(match.group(2), lineno=node.lineno)
                parts.append(nodes.Call(function, [name], [], None, None, lineno=node.lineno))
            at = match.end()
        if node.data[at:]:
            parts.append(nodes.TemplateData(node.data[at:], lineno=node.lineno))
        return parts

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop_budget", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_sized", [], [], None, None, lineno=node.lineno)
