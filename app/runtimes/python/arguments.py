"""A run's arguments checked against the JSON Schema inferred from `main` (schema.py), before
the run exists; text (a query string, path parameters, a form, `flowmill run --arg`) is
converted to the declared type on the way.

One `Arguments` is compiled per script version and reused for every run of it: the schema is
walked once into small checking functions, so a run pays a dictionary walk, not a schema walk.

JSON values are checked without loose conversion: a JSON string is not an integer. What JSON
cannot carry stays as the child converts it (app/runtimes/python/runner.py `_coerce`): `bytes`
as base64 text, `datetime`/`date` as ISO text; they are checked to decode here. Text values
are converted: integer and number from their decimal form, boolean from true/false/1/0,
an array from repeated values (each converted to the items' type), an object from JSON text;
an empty text is None for an argument that may be None.

An argument may be None when it is not required and its default is None or absent
(`Optional[int]`, `x: int = None`). Messages name the argument (and where inside it) and
never the value: a value may be a secret, or large.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Callable, Collection
from typing import Any

import msgspec

REFERENCE_PREFIXES = ("$var:", "$res:", "$cred:")
_INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = ("true", "1")
_FALSE = ("false", "0")
_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
               type(None): "null"}


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as the messages say it."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class ArgumentError(Exception):
    """Arguments that do not fit: `problems` is (argument, where inside it, what is wrong)
    for each argument that does not, in the order they were given (missing ones last)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(f"{where}: {what}" for _, where, what in self.problems)

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(name for name, _, _ in self.problems))


class _Problem(Exception):
    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where  # inside the argument: ".port", "[2]"


# A checker takes (value, is text, leave references alone) and gives the value main gets.
Checker = Callable[[Any, bool, bool], Any]


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(REFERENCE_PREFIXES)


def _expected(kind: str, value: Any) -> _Problem:
    return _Problem(f"expected {kind}, got {json_type(value)}")


def _string(schema: dict[str, Any]) -> Checker:
    if schema.get("contentEncoding") == "base64":
        def decodes(text: str) -> None:
            base64.b64decode(text)  # as the child decodes it
        what, check = "base64 text", decodes
    elif schema.get("format") == "date-time":
        what, check = "an ISO 8601 date and time", datetime.datetime.fromisoformat
    elif schema.get("format") == "date":
        what, check = "an ISO 8601 date", datetime.date.fromisoformat
    else:
        def string(value: Any, text: bool, refs: bool) -> Any:
            if type(value) is not str:
                raise _expected("string", value)
            return value
        return string

    def formatted(value: Any, text: bool, refs: bool) -> Any:
        if type(value) is not str:
            raise _expected("string", value)
        try:
            check(value)
        except (ValueError, binascii.Error):
            raise _Problem(f"expected {what}") from None
        return value
    return formatted


def _integer(value: Any, text: bool, refs: bool) -> Any:
    if text and type(value) is str:
        if not _INTEGER.fullmatch(value.strip()):
            raise _Problem("expected an integer")
        return int(value)
    if type(value) is not int:
        raise _expected("integer", value)
    return value


def _number(value: Any, text: bool, refs: bool) -> Any:
    if text and type(value) is str:
        if not _NUMBER.fullmatch(value.strip()):
            raise _Problem("expected a number")
        number = float(value)
        if number in (float("inf"), float("-inf")):
            raise _Problem("the number is out of range")
        return number
    if type(value) is not int and type(value) is not float:
        raise _expected("number", value)
    return value


def _boolean(value: Any, text: bool, refs: bool) -> Any:
    if text and type(value) is str:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _Problem("expected a boolean (true, false, 1 or 0)")
    if type(value) is not bool:
        raise _expected("boolean", value)
    return value


def _array(schema: dict[str, Any]) -> Checker:
    items = _compile(schema.get("items") or {})

    def array(value: Any, text: bool, refs: bool) -> Any:
        if text and type(value) is str:
            value = [value]  # one value of a key that may be repeated
        if type(value) is not list:
            raise _expected("array", value)
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(item if refs and _is_reference(item) else items(item, text, refs))
            except _Problem as problem:
                raise _Problem(problem.what, f"[{index}]{problem.where}") from None
        return checked
    return array


def _object(schema: dict[str, Any]) -> Checker:
    properties = {name: _compile(sub) for name, sub in (schema.get("properties") or {}).items()}
    required = tuple(schema.get("required") or ())

    def obj(value: Any, text: bool, refs: bool) -> Any:
        if text and type(value) is str:
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raise _Problem("expected an object as JSON text") from None
        if type(value) is not dict:
            raise _expected("object", value)
        if not properties:
            return value
        for name in required:
            if name not in value:
                raise _Problem("missing", f".{name}")
        for name, item in value.items():
            check = properties.get(name)
            if check is None or (item is None and name not in required) or (refs and _is_reference(item)):
                continue
            try:
                check(item, False, refs)
            except _Problem as problem:
                raise _Problem(problem.what, f".{name}{problem.where}") from None
        return value
    return obj


def _enum(values: list[Any], inner: Checker) -> Checker:
    allowed = {(type(v), v) for v in values if isinstance(v, (str, int, float, bool))}
    shown = ", ".join(msgspec.json.encode(v).decode() for v in values[:20])

    def enum(value: Any, text: bool, refs: bool) -> Any:
        value = inner(value, text, refs)
        if (type(value), value) not in allowed:
            raise _Problem(f"must be one of {shown}")
        return value
    return enum


def _any(value: Any, text: bool, refs: bool) -> Any:
    return value


def _compile(schema: dict[str, Any]) -> Checker:
    kind = schema.get("type")
    check: Checker
    if kind == "string":
        check = _string(schema)
    elif kind == "integer":
        check = _integer
    elif kind == "number":
        check = _number
    elif kind == "boolean":
        check = _boolean
    elif kind == "array":
        check = _array(schema)
    elif kind == "object":
        check = _object(schema)
    else:
        check = _any  # an annotation Flowmill does not know, or a union of several types
    if isinstance(schema.get("enum"), list):
        check = _enum(schema["enum"], check)
    return check


def _single(check: Checker, kind: str | None) -> Checker:
    """A top-level argument: text given more than once is a list only for an array (or an
    argument of any type)."""
    if kind in ("array", None):
        return check

    def single(value: Any, text: bool, refs: bool) -> Any:
        if text and type(value) is list:
            raise _Problem(f"given {len(value)} times; expected one value")
        return check(value, text, refs)
    return single


class Arguments:
    """The checker of one script version's arguments."""

    __slots__ = ("_checks", "_empty_is_none", "_nullable", "_required", "open", "schema")

    def __init__(self, schema: dict[str, Any], open: bool = False) -> None:
        """`schema`: the version's JSON Schema (schema.py); `open`: main takes **kwargs, so an
        argument it does not name is passed on unchecked."""
        self.schema = schema
        properties: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        self._checks = {name: _single(_compile(sub), sub.get("type")) for name, sub in properties.items()}
        self._required = tuple(name for name in properties if name in required)
        self._nullable = frozenset(
            name for name, sub in properties.items() if name not in required and sub.get("default") is None
        )
        self._empty_is_none = frozenset(
            name for name in self._nullable if properties[name].get("type") not in ("string", None)
        )
        self.open = open

    def check(self, args: dict[str, Any], text: Collection[str] = (), refs: bool = False,
              added: Collection[str] = ()) -> dict[str, Any]:
        """The arguments main gets: `args` converted where they are text (the names in
        `text`) and checked; ArgumentError naming every argument that does not fit.

        `refs`: `$var:`/`$res:`/`$cred:` strings are references, resolved later: left as they
        are. `added`: names the server adds on its own (`raw_string`), passed when main takes
        them and otherwise left to the child, which drops them.
        """
        checked: dict[str, Any] = {}
        problems: list[tuple[str, str, str]] = []
        checks = self._checks
        for name, value in args.items():
            check = checks.get(name)
            if check is None:
                if self.open or name in added:
                    checked[name] = value
                else:
                    problems.append((name, name, "main takes no such argument (a **kwargs parameter takes any)"))
                continue
            is_text = name in text
            if value is None:
                if name in self._nullable or check is _any:
                    checked[name] = None
                else:
                    problems.append((name, name, "expected a value, got null"))
                continue
            if is_text and value == "" and name in self._empty_is_none:
                checked[name] = None  # `?limit=`: no value, for an argument that may be None
                continue
            if refs and _is_reference(value):
                checked[name] = value
                continue
            try:
                checked[name] = check(value, is_text, refs)
            except _Problem as problem:
                problems.append((name, f"{name}{problem.where}", problem.what))
        for name in self._required:
            if name not in args:
                problems.append((name, name, "missing (main requires it)"))
        if problems:
            raise ArgumentError(problems)
        return checked

    def takes(self, name: str) -> bool:
        """Whether main takes an argument called `name`."""
        return self.open or name in self._checks
