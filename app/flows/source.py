"""Reading a flow's YAML text: plain data plus where each value sits in the text.

The loader is PyYAML's safe loader (only plain data is built, never Python objects) with one
change: timestamps stay text. YAML 1.1 would turn `2024-05-01` into a `date`, which is not JSON
and would surprise a property or an input that wants a string.

Before the data is built, the node tree is walked once to note the line and column of every
mapping entry and list item under the path the model uses (`tasks[1].properties.url`), so that
structural errors point at a line, and to refuse what safe_load lets through but a flow must
not hold: duplicate keys (PyYAML silently keeps the last), and aliases that expand into a huge
or endless document (the "billion laughs").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

MAX_NODES = 100_000  # values in the document once aliases are expanded; real flows hold a few thousand

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader without the timestamp resolver."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something wrong with the text itself, where it is known."""

    path: str
    message: str
    line: int | None = None  # 1-based
    column: int | None = None


class SyntaxProblem(Exception):
    """The text is not YAML (or not a YAML this reader accepts)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclasses.dataclass
class Document:
    """The data read, and where its values were written."""

    data: Any
    positions: dict[str, tuple[int, int]]  # path -> (line, column), both 1-based
    problems: list[Problem]  # duplicate keys: the data is still usable

    def position(self, path: str) -> tuple[int, int] | None:
        """Where `path` was written, or its nearest written parent (a missing key's mapping)."""
        while True:
            found = self.positions.get(path)
            if found is not None or not path:
                return found
            path = _parent(path)


def read(text: str) -> Document:
    """Parse `text`; SyntaxProblem (with line and column when YAML knows them) when it is not
    one well-formed YAML document of reasonable size."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, {}, [])
        positions: dict[str, tuple[int, int]] = {}
        problems: list[Problem] = []
        _Walk(positions, problems).node(node, "")
        _expanded_size(node, {}, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise SyntaxProblem(Problem("", f"invalid YAML: {what}", line, column)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SyntaxProblem(Problem("", f"invalid YAML: {exc.reason} (character #x{code:04x})", line, column)) from None
    except yaml.YAMLError as exc:
        raise SyntaxProblem(Problem("", f"invalid YAML: {exc}")) from None
    except RecursionError:
        raise SyntaxProblem(Problem("", "invalid YAML: the document is nested too deeply")) from None
    finally:
        loader.dispose()
    return Document(data, positions, problems)


class _Walk:
    """Notes positions and duplicate keys, each node once (aliases share nodes)."""

    def __init__(self, positions: dict[str, tuple[int, int]], problems: list[Problem]) -> None:
        self.positions = positions
        self.problems = problems
        self.seen: set[int] = set()

    def node(self, node: yaml.Node, path: str) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, str] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                child = f"{path}.{key.value}" if path else str(key.value)
                where = (key.start_mark.line + 1, key.start_mark.column + 1)
                if key.value in keys:
                    self.problems.append(Problem(child, f"duplicate key '{key.value}' (also at {keys[key.value]})", *where))
                else:
                    keys[key.value] = f"line {where[0]}"
                    self.positions.setdefault(child, where)
                self.node(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                self.positions.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
                self.node(item, child)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `node` stands for once its aliases are expanded (memoized per node)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.MarkedYAMLError(problem="a YAML alias refers to itself (a recursive document)", problem_mark=node.start_mark)
    size = 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        open_.add(key)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        for child in children:
            size += _expanded_size(child, sizes, open_)
            if size > MAX_NODES:
                raise yaml.MarkedYAMLError(
                    problem=f"the document holds more than {MAX_NODES} values once its aliases are expanded",
                    problem_mark=node.start_mark,
                )
        open_.discard(key)
    sizes[key] = size
    return size


def _parent(path: str) -> str:
    """`tasks[1].properties.url` -> `tasks[1].properties` -> `tasks[1]` -> `tasks` -> ``."""
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""
