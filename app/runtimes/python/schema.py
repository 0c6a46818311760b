"""A script's shape, read from its source without running it: the JSON Schema of `main`'s
arguments (in the form Windmill produces), and whether it has a `preprocessor`.

Type hints map to JSON Schema: str, int, float, bool, dict, list[T], bytes (base64),
datetime/date, Optional[T] and `T | None`, Literal enums, and TypedDict classes: one whose
name is all lowercase is a resource type (`db: postgresql` is filled from a resource).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NO_DEFAULT = object()
_SIMPLE = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "dict": {"type": "object"},
    "Dict": {"type": "object"},
    "list": {"type": "array", "items": {}},
    "List": {"type": "array", "items": {}},
    "tuple": {"type": "array", "items": {}},
    "bytes": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "Any": {},
}
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ScriptSyntaxError(Exception):
    """The source does not parse, or has no top-level `main`."""

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


def _name(node: ast.expr) -> str | None:
    """`X` or `mod.X` -> "X"."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class _Annotations:
    def __init__(self, typed_dicts: dict[str, ast.ClassDef]) -> None:
        self.typed_dicts = typed_dicts
        self.resource_types: list[str] = []

    def schema(self, node: ast.expr | None) -> tuple[dict[str, Any], bool]:
        """(schema, optional) of an annotation."""
        if node is None:
            return {}, False
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
            try:
                return self.schema(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                return {}, False
        if isinstance(node, ast.Constant) and node.value is None:
            return {}, True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # T | None
            return self._union([node.left, node.right])
        if isinstance(node, ast.Subscript):
            return self._generic(node)
        name = _name(node)
        if name is None:
            return {}, False
        if name in self.typed_dicts:
            return self._typed_dict(name), False
        return dict(_SIMPLE.get(name, {})), False

    def _union(self, members: list[ast.expr]) -> tuple[dict[str, Any], bool]:
        optional = any(isinstance(m, ast.Constant) and m.value is None for m in members)
        rest = [m for m in members if not (isinstance(m, ast.Constant) and m.value is None)]
        if len(rest) == 1:
            schema, inner_optional = self.schema(rest[0])
            return schema, optional or inner_optional
        return {}, optional

    def _generic(self, node: ast.Subscript) -> tuple[dict[str, Any], bool]:
        base = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            schema, _ = self.schema(args[0])
            return schema, True
        if base == "Union":
            return self._union(args)
        if base == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            kinds = {_JSON_TYPE.get(type(v)) for v in values}
            schema: dict[str, Any] = {"enum": values}
            if len(kinds) == 1 and None not in kinds:
                schema = {"type": kinds.pop(), "enum": values}
            return schema, False
        if base in ("list", "List", "Sequence", "Iterable", "tuple", "Tuple", "set", "Set"):
            items, _ = self.schema(args[0])
            return {"type": "array", "items": items}, False
        if base in ("dict", "Dict", "Mapping"):
            return {"type": "object"}, False
        if base == "Annotated":
            return self.schema(args[0])
        return {}, False

    def _typed_dict(self, name: str) -> dict[str, Any]:
        if name.islower():
            if name not in self.resource_types:
                self.resource_types.append(name)
            return {"type": "object", "format": f"resource-{name}"}
        properties, required = {}, []
        for statement in self.typed_dicts[name].body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                field, optional = self.schema(statement.annotation)
                properties[statement.target.id] = field
                if not optional:
                    required.append(statement.target.id)
        return {"type": "object", "properties": properties, "required": required}


def _default(node: ast.expr | None) -> Any:
    if node is None:
        return _NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _NO_DEFAULT  # an expression: the argument is optional, its default unknown here


def _typed_dicts(tree: ast.Module) -> dict[str, ast.ClassDef]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(_name(base) == "TypedDict" for base in node.bases):
            found[node.name] = node
    return found


def inspect_script(source: str) -> ScriptInfo:
    """Parse `source` (never run it) and describe its `main`; ScriptSyntaxError otherwise."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ScriptSyntaxError(error.msg, error.lineno or 1, error.offset or 0) from None
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    main = functions.get("main")
    if main is None:
        raise ScriptSyntaxError("the script has no top-level `def main(...)`", 1, 0)
    annotations = _Annotations(_typed_dicts(tree))
    arguments = [*main.args.posonlyargs, *main.args.args]
    defaults: list[ast.expr | None] = [None] * (len(arguments) - len(main.args.defaults)) + list(main.args.defaults)
    arguments += main.args.kwonlyargs
    defaults += list(main.args.kw_defaults)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for argument, default_node in zip(arguments, defaults):
        schema, optional = annotations.schema(argument.annotation)
        default = _default(default_node)
        if default is not _NO_DEFAULT:
            if not schema and type(default) in _JSON_TYPE:
                schema = {"type": _JSON_TYPE[type(default)]}
            elif not schema and isinstance(default, (list, tuple)):
                schema = {"type": "array", "items": {}}
            elif not schema and isinstance(default, dict):
                schema = {"type": "object"}
            if isinstance(default, tuple):
                default = list(default)
            if not isinstance(default, (set, frozenset, bytes, complex)):
                schema["default"] = default
        schema["description"] = ""
        properties[argument.arg] = schema
        if default_node is None and not optional:
            required.append(argument.arg)
    return ScriptInfo(
        schema={"$schema": SCHEMA_DIALECT, "type": "object", "properties": properties, "required": required,
                "order": list(properties)},
        has_preprocessor="preprocessor" in functions,
        is_async=isinstance(main, ast.AsyncFunctionDef),
        resource_types=annotations.resource_types,
    )
