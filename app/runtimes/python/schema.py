"""A script's shape, read from its source without running it: the JSON Schema of `main`'s
arguments (in the form Windmill produces, so its users recognise it), whether `main` is
async, and whether the script has a `preprocessor`.

Type hints map to JSON Schema: str, int, float, bool, dict, list[T], bytes (base64),
datetime/date, Optional[T] and `T | None`, Literal enums, and TypedDict classes: one whose
name is all lowercase is a resource type (`db: postgresql` is filled from a resource), any
other is an object with its fields as properties. An annotation Flowmill does not know gives
no "type" at all, as in Windmill: the argument accepts any JSON value.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Annotations by canonical name: what follows `typing.` and friends, or `datetime.<x>`.
_SIMPLE: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "bytes": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},  # Windmill reads a bare `datetime` so too
    "datetime.datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "datetime.date": {"type": "string", "format": "date"},
}
_OBJECTS = {"dict", "Dict", "Mapping", "MutableMapping"}
_ARRAYS = {"list", "List", "tuple", "Tuple", "set", "Set", "frozenset", "FrozenSet", "Sequence",
           "MutableSequence", "Iterable", "Collection"}
_WRAPPERS = {"Annotated", "Required", "NotRequired", "ReadOnly", "Final"}  # their first argument is the type
_TRANSPARENT_MODULES = ("typing.", "typing_extensions.", "collections.abc.", "builtins.")
# Windmill takes a bare `list` (no default to learn from) for a list of strings.
_BARE_LIST_ITEMS: dict[str, Any] = {"type": "string"}
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_MISSING: Any = object()


class ScriptSyntaxError(Exception):
    """The source does not compile, or has no top-level `main`; `line` is 1-based and
    `column` is Python's 1-based offset (0 when the error is about the script as a whole)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.line = line
        self.column = column


@dataclasses.dataclass(frozen=True)
class ScriptInfo:
    schema: dict[str, Any]
    has_preprocessor: bool
    is_async: bool
    resource_types: list[str]
    takes_kwargs: bool = False  # `def main(..., **kwargs)`: arguments it does not name are its too
    # Arguments annotated with a bare `list`: their items are shown as strings (Windmill's
    # reading, for its forms) but nothing says what they are, so they are not checked.
    untyped_items: frozenset[str] = frozenset()
    # `main` is decorated `@workflow` (Flowmill's or wmill's, called or not); the name given
    # by `@workflow(name="...")`, if any.
    is_workflow: bool = False
    workflow_name: str | None = None


def inspect_script(source: str) -> ScriptInfo:
    """Describe the script in `source` without running it.

    Raises ScriptSyntaxError, with where, when it does not compile or has no top-level `main`.
    """
    tree = _parse(source)
    functions = {
        node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }  # a later definition replaces an earlier one, as when Python runs the module
    main = functions.get("main")
    if main is None:
        raise ScriptSyntaxError("the script has no top-level `def main(...)`", 1, 0)
    annotations = _Annotations(tree)
    properties: dict[str, Any] = {}
    required: list[str] = []
    untyped_items = set()
    for argument, default_node in _arguments(main.args):
        schema, optional = annotations.schema(argument.annotation)
        default = _MISSING if default_node is None else _literal(default_node)
        if default is not _MISSING:
            if argument.annotation is None and default is not None:  # `n=3` is an integer, as in Windmill
                schema = _schema_of_value(default)
            elif schema.get("type") == "array" and "items" not in schema and isinstance(default, list) and default:
                schema["items"] = _schema_of_value(default)["items"]
            schema["default"] = default
        if schema.get("type") == "array" and "items" not in schema:
            untyped_items.add(argument.arg)
        properties[argument.arg] = {**_complete(schema), "description": ""}
        if default_node is None and not optional:
            required.append(argument.arg)
    return ScriptInfo(
        schema={"$schema": SCHEMA_DIALECT, "type": "object", "properties": properties, "required": required,
                "order": list(properties)},
        has_preprocessor="preprocessor" in functions,
        is_async=isinstance(main, ast.AsyncFunctionDef),
        resource_types=annotations.resource_types,
        takes_kwargs=main.args.kwarg is not None, untyped_items=frozenset(untyped_items),
        **_workflow_mark(main),
    )


def _workflow_mark(main: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Any]:
    """Whether `main` is decorated `workflow`, `wmill.workflow` or `flowmill.workflow` (with or
    without a call), and the literal `name=` of the call."""
    for decorator in main.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        named = (isinstance(target, ast.Name) and target.id == "workflow") or (
            isinstance(target, ast.Attribute) and target.attr == "workflow" and isinstance(target.value, ast.Name)
            and target.value.id in ("wmill", "flowmill"))
        if not named:
            continue
        name = None
        for keyword in call.keywords if call is not None else ():
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                name = keyword.value.value
        return {"is_workflow": True, "workflow_name": name}
    return {}


def _parse(source: str) -> ast.Module:
    try:
        tree = ast.parse(source)
        # Compiling (never running) also catches what only the compiler sees:
        # `return` outside a function, `nonlocal` at module level, and the like.
        compile(tree, "<script>", "exec", dont_inherit=True)
    except SyntaxError as error:
        raise ScriptSyntaxError(error.msg, error.lineno or 1, error.offset or 0) from None
    except (ValueError, RecursionError, MemoryError) as error:  # NUL bytes, absurd nesting
        raise ScriptSyntaxError(str(error) or type(error).__name__, 1, 0) from None
    return tree


def _arguments(args: ast.arguments) -> Iterator[tuple[ast.arg, ast.expr | None]]:
    """Each named argument of `main` with its default; *args and **kwargs are not inputs."""
    positional = [*args.posonlyargs, *args.args]
    padding: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    yield from zip(positional, [*padding, *args.defaults], strict=True)
    yield from zip(args.kwonlyargs, args.kw_defaults, strict=True)


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those under a top-level `if` or `try`
    (`if TYPE_CHECKING:`, `try: ... except ImportError:`), but not inside functions."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _top_level(handler.body)


class _Annotations:
    """Turns annotations into schemas, knowing the script's imports and TypedDicts."""

    def __init__(self, tree: ast.Module) -> None:
        self.aliases: dict[str, str] = {}  # local name -> what it stands for: `dt` -> `datetime`
        self.typed_dicts: dict[str, ast.ClassDef] = {}
        self.resource_aliases: set[str] = set()
        self.resource_types: list[str] = []
        self._expanding: set[str] = set()
        for node in _top_level(tree.body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.ClassDef) and any(self._is_typed_dict(base) for base in node.bases):
                self.typed_dicts[node.name] = node
            elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                  and node.targets[0].id.islower() and self._canonical(node.value) in _OBJECTS):
                # `postgresql = dict`: the older Windmill way of naming a resource type.
                self.resource_aliases.add(node.targets[0].id)

    def _is_typed_dict(self, base: ast.expr) -> bool:
        name = self._canonical(base)
        return name == "TypedDict" or name in self.typed_dicts

    def _canonical(self, node: ast.expr) -> str | None:
        """`typing.Optional`, `t.Optional` (after `import typing as t`) and `Optional` are all
        "Optional"; `dt.date` and `date` (from datetime) are "datetime.date"."""
        if isinstance(node, ast.Name):
            dotted = self.aliases.get(node.id, node.id)
        elif isinstance(node, ast.Attribute):
            base = self._canonical(node.value)
            if base is None:
                return None
            dotted = f"{base}.{node.attr}"
        else:
            return None
        for prefix in _TRANSPARENT_MODULES:
            if dotted.startswith(prefix):
                return dotted[len(prefix):]
        return dotted

    def schema(self, node: ast.expr | None) -> tuple[dict[str, Any], bool]:
        """(schema, optional) of an annotation; optional when None is one of its values."""
        if node is None:
            return {}, False
        if isinstance(node, ast.Constant):
            if node.value is None:
                return {}, True
            if isinstance(node.value, str):  # a string annotation: "datetime.date"
                try:
                    return self.schema(ast.parse(node.value.strip(), mode="eval").body)
                except SyntaxError:
                    return {}, False
            return {}, False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # PEP 604: T | None
            return self._union(_flatten_bitor(node))
        if isinstance(node, ast.Subscript):
            return self._generic(node)
        name = self._canonical(node)
        if name is None:
            return {}, False
        if name in self.typed_dicts:
            return self._typed_dict(name), False
        if name in self.resource_aliases:
            return self._resource(name), False
        if name in _SIMPLE:
            return dict(_SIMPLE[name]), False
        if name in _OBJECTS:
            return {"type": "object"}, False
        if name in _ARRAYS:
            return {"type": "array"}, False  # items are learnt from a default, if any
        return {}, False  # Any, object, wmill.S3Object, a class we cannot see into: no type

    def _union(self, members: list[ast.expr]) -> tuple[dict[str, Any], bool]:
        schemas = [self.schema(member) for member in members]
        optional = any(opt for _, opt in schemas)
        typed = [schema for schema, _ in schemas if schema]
        untyped = [m for m, (schema, _) in zip(members, schemas, strict=True) if not schema and not _is_none(m)]
        if len(typed) == 1 and not untyped:
            return typed[0], optional
        return {}, optional  # int | str: any of several types, which Windmill's form cannot say

    def _generic(self, node: ast.Subscript) -> tuple[dict[str, Any], bool]:
        base = self._canonical(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            schema, _ = self.schema(args[0])
            return schema, True
        if base == "Union":
            return self._union(args)
        if base == "Literal":
            return _literal_enum(args)
        if base in _WRAPPERS:
            return self.schema(args[0])
        if base in _ARRAYS:
            items, _ = self.schema(args[0])
            return {"type": "array", "items": _complete(items)}, False
        if base in _OBJECTS:
            return {"type": "object"}, False
        return {}, False

    def _resource(self, name: str) -> dict[str, Any]:
        if name not in self.resource_types:
            self.resource_types.append(name)
        return {"type": "object", "format": f"resource-{name}"}

    def _typed_dict(self, name: str) -> dict[str, Any]:
        if name.islower():
            return self._resource(name)
        if name in self._expanding:  # a TypedDict that refers to itself
            return {"type": "object"}
        self._expanding.add(name)
        try:
            properties: dict[str, Any] = {}
            required: list[str] = []
            for field, annotation, total in self._fields(name):
                schema, optional = self.schema(annotation)
                properties[field] = _complete(schema)
                wrapper = self._canonical(annotation.value) if isinstance(annotation, ast.Subscript) else None
                if (total or wrapper == "Required") and wrapper != "NotRequired" and not optional:
                    required.append(field)
            return {"type": "object", "properties": properties, "required": required}
        finally:
            self._expanding.discard(name)

    def _fields(self, name: str) -> Iterator[tuple[str, ast.expr, bool]]:
        """(field, annotation, total) of a TypedDict, its TypedDict bases' fields first."""
        node = self.typed_dicts[name]
        for base in node.bases:
            base_name = self._canonical(base)
            if base_name in self.typed_dicts and base_name != name:
                yield from self._fields(base_name)
        total = not any(
            k.arg == "total" and isinstance(k.value, ast.Constant) and k.value.value is False for k in node.keywords
        )
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                yield statement.target.id, statement.annotation, total


def _flatten_bitor(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_flatten_bitor(node.left), *_flatten_bitor(node.right)]
    return [node]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _literal_enum(args: list[ast.expr]) -> tuple[dict[str, Any], bool]:
    """Literal["a", "b"] -> a string enum; the type comes from the values when they share one."""
    values = [value for value in map(_literal, args) if value is not _MISSING and value is not None]
    optional = any(_is_none(a) for a in args)
    kinds = {_JSON_TYPE.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        return {"type": kinds.pop(), "enum": values}, optional
    return {"enum": values}, optional


def _complete(schema: dict[str, Any]) -> dict[str, Any]:
    """An array whose items nothing told is a list of strings, as Windmill has it."""
    if schema.get("type") == "array" and "items" not in schema:
        return {**schema, "items": dict(_BARE_LIST_ITEMS)}
    return schema


def _literal(node: ast.expr) -> Any:
    """A default's value as JSON, or _MISSING when it is an expression (`datetime.now()`)
    or has no JSON form: the argument is then optional with no default shown."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _MISSING
    return _to_json(value)


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _MISSING
    if isinstance(value, bytes):  # the schema says base64, so the default is written so too
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        items = [_to_json(item) for item in value]
        return _MISSING if any(item is _MISSING for item in items) else items
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return _MISSING
        entries = {key: _to_json(item) for key, item in value.items()}
        return _MISSING if any(item is _MISSING for item in entries.values()) else entries
    return _MISSING  # sets, complex numbers, Ellipsis


def _schema_of_value(value: Any) -> dict[str, Any]:
    """What an unannotated argument is, judged by its default, as Windmill judges it."""
    kind = _JSON_TYPE.get(type(value))
    if kind:
        return {"type": kind}
    if isinstance(value, dict):
        return {"type": "object"}
    if isinstance(value, list):
        kinds = {_JSON_TYPE.get(type(item)) for item in value}
        if len(kinds) == 1 and None not in kinds:
            return {"type": "array", "items": {"type": kinds.pop()}}
        return {"type": "array", "items": dict(_BARE_LIST_ITEMS) if not value else {}}
    return {}
