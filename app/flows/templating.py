"""Rendering a task's properties: `{{ ... }}` and `{% ... %}` (Jinja2, sandboxed to plain data,
see `sandbox.py`) and `${NAME}` credentials.

A string without `{{`, `{%` or `${` is not a template and is returned as it is, without Jinja.
A string that is exactly one `{{ expr }}` (blanks around it aside) renders to the expression's
value: `"{{ outputs.fetch.body.items }}"` is a list, `"{{ inputs.n + 1 }}"` a number. Any other
template renders to text, in which objects and lists show as JSON, booleans as true/false and
null as nothing.

Templates render synchronously, but `kv()`, `vars()` and credentials are looked up
asynchronously (a database read): when a render meets a value it has not fetched yet, it stops
(`sandbox.NeedLookup`), the value is awaited and remembered, and the template is rendered again.
A template with n lookups renders n + 1 times; most have none.

Templates are prepared once per text and kept in an LRU cache, so a flow that runs again does
not prepare them again. Most are only text, data paths (`outputs.fetch.body.items`) and
credentials: those are read directly, through the sandbox's own getattr/getitem; the others
are compiled by Jinja.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.environment import Template
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.runtime import Undefined

from app.engine.masks import hide
from app.flows import filters, sandbox

# kind "kv" (namespace, key) -> value or None; "vars" (path,) -> value; "cred" (NAME,) -> clear text
Lookup = Callable[[str, tuple[str, ...]], Awaitable[Any]]
MAX_LOOKUPS = 50  # distinct kv/vars/credential values one render may fetch
_FALSE_TEXTS = frozenset({"", "false", "0", "no", "off", "null", "none"})


class TemplateError(Exception):
    """A template could not be rendered: an undefined name, a forbidden construct, a failed
    lookup. `message` has the credentials it had fetched masked; `secrets` lists them."""

    def __init__(self, message: str, secrets: set[str] | None = None) -> None:
        self.secrets = set(secrets or ())
        self.message = hide(message, self.secrets)
        super().__init__(self.message)


@dataclasses.dataclass
class Rendered:
    """A rendered value and the clear credential values that went into it (to be masked)."""

    value: Any
    secrets: set[str]


@dataclasses.dataclass(frozen=True)
class _Compiled:
    error: str | None = None  # cannot be rendered: syntax or a forbidden construct
    unknown: str | None = None  # reads a name that is not in scope (check() only)
    template: Template | None = None
    parts: tuple[sandbox.Part, ...] | None = None  # text, paths and credentials only: read without Jinja's code
    native: bool = False  # one {{ expr }}: its value (the template sets `result` to it)
    names: frozenset[str] = frozenset()
    references: frozenset[tuple[str, str]] = frozenset()


def is_template(text: str) -> bool:
    """Whether `text` is rendered at all (it holds `{{`, `{%` or `${`)."""
    return "{{" in text or "{%" in text or "${" in text


class Templates:
    """The template engine of flows: one per process is enough (it holds the compiled cache)."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._env = sandbox.DataEnvironment()
        self._compiled = functools.lru_cache(maxsize=cache_size)(self._compile)

    async def render(self, value: Any, scope: dict[str, Any], lookup: Lookup) -> Rendered:
        """`value` with every string in it rendered (dicts and lists walked, keys left as they
        are) against `scope` (inputs, outputs, execution, item, index, ...). TemplateError when
        a template fails."""
        state = sandbox.RenderState()
        names = {**scope, **self._env.globals}  # built once: each template's context reads it as is
        while True:
            state.loops = 0  # the loop budget is per attempt: a retry after a lookup starts over
            token = sandbox.STATE.set(state)
            try:
                return Rendered(self._walk(value, names, state), state.secrets)
            except sandbox.NeedLookup as exc:
                need = (exc.kind, exc.args_)
            except RecursionError:
                raise TemplateError("the value is nested too deeply to render", state.secrets) from None
            finally:
                sandbox.STATE.reset(token)
            await _fetch(need, lookup, state)

    async def condition(self, text: str | bool, scope: dict[str, Any], lookup: Lookup) -> bool:
        """A condition (runIf, flow.if, flow.loop_until) as true or false. Rendered text counts
        as false when it is empty, `false`, `0`, `no`, `off`, `null` or `none` (any case)."""
        value = (await self.render(text, scope, lookup)).value
        if isinstance(value, str):
            return value.strip().lower() not in _FALSE_TEXTS
        return bool(value)

    def check(self, text: str) -> str | None:
        """What is wrong with template `text` (syntax, a forbidden construct, an unknown name,
        an unknown filter), or None. Text that is not a template is always fine."""
        if not is_template(text):
            return None
        compiled = self._compiled(text)
        return compiled.error or compiled.unknown

    def references(self, text: str) -> set[tuple[str, str]]:
        """The tasks, inputs and credentials `text` reads by name:
        {("outputs", "fetch"), ("inputs", "who"), ("cred", "API_TOKEN")}."""
        return set(self._compiled(text).references) if is_template(text) else set()

    def names(self, text: str) -> set[str]:
        """The names `text` reads at its top level ("inputs", "item", ...), locals excluded."""
        return set(self._compiled(text).names) if is_template(text) else set()

    # -- rendering -----------------------------------------------------------------------

    def _walk(self, value: Any, names: dict[str, Any], state: sandbox.RenderState) -> Any:
        if isinstance(value, str):
            return self._string(value, names, state) if is_template(value) else value
        if isinstance(value, dict):
            return {key: self._walk(item, names, state) for key, item in value.items()}
        if isinstance(value, list):
            return [self._walk(item, names, state) for item in value]
        return value

    def _string(self, text: str, names: dict[str, Any], state: sandbox.RenderState) -> Any:
        compiled = self._compiled(text)
        if compiled.error is not None:
            raise TemplateError(compiled.error, state.secrets)
        try:
            return _run(self._env, compiled, names)
        except (sandbox.NeedLookup, TemplateError):
            raise
        except Exception as exc:  # a template's failure is the task's, never the runner's
            raise TemplateError(_describe(exc), state.secrets) from None

    # -- compiling -----------------------------------------------------------------------

    def _compile(self, text: str) -> _Compiled:
        if len(text) > sandbox.MAX_SOURCE:
            return _Compiled(error=f"template too long (more than {sandbox.MAX_SOURCE} characters)")
        try:
            return self._prepare(text)
        except TemplateSyntaxError as exc:
            where = f" (line {exc.lineno})" if "\n" in text.strip() else ""
            return _Compiled(error=f"template syntax error: {exc.message}{where}")
        except RecursionError:  # the parser, the checks and the compiler all recurse
            return _Compiled(error="template nested too deeply")
        except (JinjaError, SyntaxError, ValueError) as exc:
            return _Compiled(error=f"template error: {_describe(exc)}")

    def _prepare(self, text: str) -> _Compiled:
        tree = self._env.parse(text)
        found = sandbox.analyse(tree)
        if found.forbidden is not None:
            return _Compiled(error=found.forbidden)
        base = _Compiled(unknown=found.unknown, names=frozenset(found.names), references=frozenset(found.references))
        sandbox.Guard().visit(tree)
        parts = sandbox.simple_parts(tree)
        if parts is not None:
            filled = tuple(p for p in parts if not (isinstance(p, str) and not p.strip()))
            if len(filled) == 1 and not isinstance(filled[0], str):
                return dataclasses.replace(base, parts=filled, native=True)
            return dataclasses.replace(base, parts=parts)
        expression = sandbox.native_expression(tree)
        if expression is not None:
            assign = nodes.Assign(nodes.Name("result", "store", lineno=1), expression, lineno=1)
            tree = nodes.Template([assign], lineno=1)
            tree.set_environment(self._env)
            return dataclasses.replace(base, template=self._env.from_string(tree), native=True)
        tree.set_environment(self._env)
        return dataclasses.replace(base, template=self._env.from_string(tree))


def _run(env: sandbox.DataEnvironment, compiled: _Compiled, names: dict[str, Any]) -> Any:
    if compiled.parts is not None:
        return _read(env, compiled, names)
    template = compiled.template
    assert template is not None
    context = template.new_context(names, shared=True)  # `names` is fresh per render: no copy
    if compiled.native:
        for _ in template.root_render_func(context):
            pass
        return _plain(context.vars["result"])
    parts: list[str] = []
    size = 0
    for chunk in template.root_render_func(context):
        size += len(chunk)
        if size > filters.MAX_TEXT:
            raise TemplateError(f"a template made a text longer than {filters.MAX_TEXT} characters")
        parts.append(chunk)
    return "".join(parts)


def _read(env: sandbox.DataEnvironment, compiled: _Compiled, names: dict[str, Any]) -> Any:
    assert compiled.parts is not None
    values = [
        part if isinstance(part, str) else part.read(env, names) if isinstance(part, sandbox.Path) else sandbox.credential(part.name)
        for part in compiled.parts
    ]
    if compiled.native:
        return _plain(values[0])
    text = "".join(value if isinstance(value, str) else filters.as_text(value) for value in values)
    if len(text) > filters.MAX_TEXT:
        raise TemplateError(f"a template made a text longer than {filters.MAX_TEXT} characters")
    return text


def _plain(value: Any) -> Any:
    """The value of a one-expression template as data, copied: Jinja's tuples become lists, an
    undefined value anywhere in it is an error, and so is any Python object (`[loop]`). The
    copy also keeps a plugin that changes its properties from changing another task's outputs."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises, naming what is missing
    raise TemplateError(f"a template's value is not data ({type(value).__name__})")


async def _fetch(need: tuple[str, tuple[str, ...]], lookup: Lookup, state: sandbox.RenderState) -> None:
    kind, args = need
    if len(state.fetched) >= MAX_LOOKUPS:
        raise TemplateError(f"a template looked up more than {MAX_LOOKUPS} values", state.secrets)
    what = "${" + args[0] + "}" if kind == "cred" else f"{kind}({', '.join(map(repr, args))})"
    try:
        value = await lookup(kind, args)
    except Exception as exc:
        raise TemplateError(f"{what}: {getattr(exc, 'message', None) or exc}", state.secrets) from None
    if kind == "cred":
        if not isinstance(value, str):
            raise TemplateError(f"{what}: not found", state.secrets)
        state.secrets.add(value)
    state.fetched[need] = value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, JinjaError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
