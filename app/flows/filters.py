"""The filters and tests a flow template may use: a short list, each a function of plain data.

Jinja's full list is not offered: some filters reach attributes (`attr`), format text with
Python's machinery (`format`), or build large text cheaply (`center`, `indent`, `wordwrap`).
Filters that Jinja writes as generators (`map`, `select`, `unique`) return lists here, so a
template that is one expression gives data, not a Python object. Every filter that can make
its input bigger checks the size of what it makes (`sized`).
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import filters as jf
from jinja2 import pass_context, pass_environment
from jinja2 import tests as jt
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined

MAX_TEXT = 1_000_000  # characters in one text a template makes (its output included)
MAX_ITEMS = 100_000  # items in one list a template makes


def sized(value: Any) -> Any:
    """`value`, unless it is text or a list past the limits: a template must not be a way to
    fill the server's memory (`{% set a = b ~ b %}` doubles at each line)."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise SecurityError(f"a template made a text longer than {MAX_TEXT} characters")
    if isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        raise SecurityError(f"a template made a list longer than {MAX_ITEMS} items")
    return value


def as_text(value: Any) -> str:
    """How a value shows inside text: JSON for objects and lists, `true`/`false`, null as
    nothing. Anything that is not data (a function, a loop) is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return to_json(value)
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined: raises, naming what is missing
    raise SecurityError(f"a template printed something that is not data ({type(value).__name__})")


def to_json(value: Any, indent: int | None = None) -> str:
    """`value` as JSON text (also `tojson`), indented by up to 8 spaces."""
    if indent is not None and (isinstance(indent, bool) or not isinstance(indent, int) or not 0 <= indent <= 8):
        raise SecurityError("json: indent is a number of spaces, 0 to 8")
    try:
        return sized(json.dumps(value, ensure_ascii=False, indent=indent, default=_not_json))
    except (TypeError, ValueError) as exc:
        raise SecurityError(f"json: not JSON data ({exc})") from None


def _not_json(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises, naming what is missing
    raise TypeError(f"{type(value).__name__} is not data")


def from_json(value: Any) -> Any:
    """The data in a JSON text (an HTTP body read as text, a KV entry written as text)."""
    if not isinstance(value, str):
        raise SecurityError("fromjson: wants JSON text")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise SecurityError(f"fromjson: not JSON ({exc})") from None


def default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """`default_value` when `value` is missing or null (or falsy, with `boolean=true`)."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value


def to_int(value: Any, default: Any = None, base: int = 10) -> Any:
    """A whole number; `default` (or an error) when `value` is not one."""
    try:
        if isinstance(value, str):
            try:
                return int(value.strip(), base)
            except ValueError:
                return int(float(value))
        return int(value)
    except (TypeError, ValueError, OverflowError):
        if default is not None:
            return default
        raise SecurityError(f"int: {as_text(value)[:50]!r} is not a number") from None


def to_float(value: Any, default: Any = None) -> Any:
    """A number; `default` (or an error) when `value` is not one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        if default is not None:
            return default
        raise SecurityError(f"float: {as_text(value)[:50]!r} is not a number") from None


def round_(value: Any, precision: int = 0, method: str = "common") -> float:
    """`value` rounded to `precision` digits (`method`: common, ceil or floor)."""
    if isinstance(precision, bool) or not isinstance(precision, int) or abs(precision) > 30:
        raise SecurityError("round: precision is a number of digits, -30 to 30")  # round(5, -10**9) builds 10**10**9
    return jf.do_round(value, precision, method)


def replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    """`value` with `old` replaced by `new` (the first `count` times)."""
    text = as_text(value)
    if not isinstance(old, str) or not isinstance(new, str):
        raise SecurityError("replace: wants texts")
    times = text.count(old) if count is None else min(count, text.count(old))
    if len(text) + times * (len(new) - len(old)) > MAX_TEXT:
        raise SecurityError(f"a template made a text longer than {MAX_TEXT} characters")
    return text.replace(old, new, -1 if count is None else count)


def date(value: Any, format: str | None = None) -> str:
    """An ISO-8601 text or epoch seconds, as ISO-8601 (no format) or strftime(`format`).
    A time without a zone is UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise SecurityError(f"date: {value[:50]!r} is not an ISO-8601 date and time") from None
    else:
        raise SecurityError("date: wants ISO-8601 text or epoch seconds")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    if format is None:
        return moment.isoformat()
    if not isinstance(format, str) or len(format) > 200:
        raise SecurityError("date: the format is a short text such as '%Y-%m-%d'")
    return moment.strftime(format)


@pass_environment
def join(env: Environment, value: Iterable[Any], separator: str = "", attribute: str | int | None = None) -> str:
    """The items as text, `separator` between them."""
    items: Iterable[Any] = value
    if attribute is not None:
        items = map(jf.make_attrgetter(env, attribute), value)
    texts = [as_text(item) for item in items]
    glue = as_text(separator)
    if sum(map(len, texts)) + len(glue) * max(len(texts) - 1, 0) > MAX_TEXT:  # before joining
        raise SecurityError(f"a template made a text longer than {MAX_TEXT} characters")
    return glue.join(texts)


@pass_environment
def first(env: Environment, value: Iterable[Any]) -> Any:
    """The first item (undefined when there is none)."""
    for item in value:
        return item
    return env.undefined("first: the list is empty")


@pass_environment
def last(env: Environment, value: Any) -> Any:
    """The last item (undefined when there is none)."""
    items = value if isinstance(value, (list, tuple, str)) else list(value)
    return items[-1] if items else env.undefined("last: the list is empty")


def keys(value: Any) -> list[Any]:
    """The keys of an object."""
    return list(_mapping(value, "keys"))


def values(value: Any) -> list[Any]:
    """The values of an object."""
    return list(_mapping(value, "values").values())


def items(value: Any) -> list[list[Any]]:
    """The [key, value] pairs of an object."""
    return [[k, v] for k, v in _mapping(value, "items").items()]


def _mapping(value: Any, name: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise SecurityError(f"{name}: wants an object")
    return value


def to_list(value: Any) -> list[Any]:
    """The items of a list, the characters of a text, the keys of an object."""
    return sized(list(value))


def reverse(value: Any) -> Any:
    """The list, or the text, backwards."""
    if isinstance(value, (str, list, tuple)):
        return list(value[::-1]) if not isinstance(value, str) else value[::-1]
    raise SecurityError("reverse: wants a list or a text")


def split(value: Any, separator: str | None = None, limit: int = -1) -> list[str]:
    """A text cut at `separator` (at whitespace without one), at most `limit` times."""
    if not isinstance(value, str):
        raise SecurityError("split: wants a text")
    return sized(value.split(separator, limit))


def b64encode(value: Any) -> str:
    """The UTF-8 bytes of a text, in base64 (for Basic auth headers and the like)."""
    return sized(base64.b64encode(as_text(value).encode()).decode("ascii"))


def b64decode(value: Any) -> str:
    """A base64 text decoded, as UTF-8 text."""
    try:
        return base64.b64decode(as_text(value), validate=True).decode("utf-8", errors="replace")
    except ValueError:
        raise SecurityError("b64decode: not base64") from None


def _listing(function: Callable[..., Iterable[Any]]) -> Callable[..., list[Any]]:
    """A Jinja filter that returns a generator, returning a list instead."""

    @pass_context
    def wrapped(context: Context, value: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return sized(list(function(context, value, *args, **kwargs)))

    wrapped.__doc__ = function.__doc__
    return wrapped


def _text(method: Callable[[str], str]) -> Callable[[Any], str]:
    def text_filter(value: Any) -> str:
        return method(as_text(value))

    text_filter.__name__ = text_filter.__qualname__ = method.__name__
    return text_filter


@pass_environment
def _unique(env: Environment, value: Any, case_sensitive: bool = False, attribute: str | int | None = None) -> list[Any]:
    return list(jf.sync_do_unique(env, value, case_sensitive, attribute))


FILTERS: dict[str, Callable[..., Any]] = {
    "json": to_json,
    "tojson": to_json,
    "fromjson": from_json,
    "default": default,
    "length": len,
    "count": len,
    "upper": _text(str.upper),
    "lower": _text(str.lower),
    "title": _text(str.title),
    "capitalize": _text(str.capitalize),
    "trim": _text(str.strip),
    "string": as_text,
    "int": to_int,
    "float": to_float,
    "round": round_,
    "abs": abs,
    "replace": replace,
    "join": join,
    "split": split,
    "first": first,
    "last": last,
    "list": to_list,
    "reverse": reverse,
    "date": date,
    "keys": keys,
    "values": values,
    "items": items,
    "sort": jf.do_sort,
    "unique": _unique,
    "min": jf.do_min,
    "max": jf.do_max,
    "sum": jf.sync_do_sum,
    "map": _listing(jf.sync_do_map),
    "select": _listing(jf.sync_do_select),
    "reject": _listing(jf.sync_do_reject),
    "selectattr": _listing(jf.sync_do_selectattr),
    "rejectattr": _listing(jf.sync_do_rejectattr),
    "urlencode": jf.do_urlencode,
    "b64encode": b64encode,
    "b64decode": b64decode,
}

# Jinja's tests, less `callable`, `sameas`, `escaped`, `filter` and `test` (about Python
# objects and the environment, not data).
TESTS: dict[str, Callable[..., bool]] = {
    name: test
    for name, test in jt.TESTS.items()
    if name not in ("callable", "sameas", "escaped", "filter", "test")
}
