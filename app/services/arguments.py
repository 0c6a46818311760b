"""Checking a run's arguments against its script version's schema, before the run exists
(app/runtimes/python/arguments.py does the checking): one checker per version, kept."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from app.errors import InvalidArguments
from app.runtimes.python.arguments import ArgumentError, Arguments
from app.runtimes.python.schema import ScriptSyntaxError, inspect_script

MAX_CHECKERS = 4096  # script versions whose checker is kept in memory
# What the server adds to a route's arguments on its own: main takes it or the child drops it.
SERVER_ADDED = ("raw_string",)


def invalid_arguments(error: ArgumentError) -> InvalidArguments:
    """The 400 of arguments that do not fit: the message and the details name the fields."""
    return InvalidArguments(error.message, {
        "fields": error.fields, "errors": [{"field": where, "message": what} for _, where, what in error.problems],
    })


def checker_of(schema: dict[str, Any], content: str) -> Arguments:
    """The checker of a version with `schema` and source `content`: open when `main` takes
    **kwargs (an argument it does not name is its too), and blind to the items of a bare
    `list` (the schema shows them as strings, as Windmill does; Python says nothing of them)."""
    try:
        info = inspect_script(content)
    except ScriptSyntaxError:  # saved, so it compiles; were it not, nothing is refused for it
        return Arguments(schema, open=True)
    if info.untyped_items:
        properties = {name: {**sub, "items": {}} if name in info.untyped_items else sub
                      for name, sub in (schema.get("properties") or {}).items()}
        schema = {**schema, "properties": properties}
    return Arguments(schema, open=info.takes_kwargs)


class ArgumentChecks:
    """The checker of each script version, compiled at its first run and kept."""

    def __init__(self) -> None:
        self._by_version: dict[str, Arguments] = {}

    def of(self, version: dict[str, Any]) -> Arguments:
        """The checker of `version` (a Scripts version: hash, schema, content)."""
        checker = self._by_version.get(version["hash"])
        if checker is None:
            if len(self._by_version) >= MAX_CHECKERS:
                self._by_version.clear()
            checker = checker_of(version["schema"], version["content"])
            self._by_version[version["hash"]] = checker
        return checker

    def check(self, version: dict[str, Any], args: dict[str, Any], text: Collection[str] = (),
              refs: bool = False) -> dict[str, Any]:
        """`args` as main gets them (text converted); InvalidArguments (400) naming each
        argument that does not fit. `refs`: reference strings are left as they are."""
        try:
            return self.of(version).check(args, text, refs, SERVER_ADDED)
        except ArgumentError as error:
            raise invalid_arguments(error) from None
