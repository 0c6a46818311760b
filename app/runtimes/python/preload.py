"""What a fork server imports before it forks, so that every child has it for free.

The full fork server preloads httpx and wmill as well; the lean one only the standard
library's cheap modules, and runs the scripts that import nothing else (`is_light`), whose
children then have less memory to copy.
"""

from __future__ import annotations

import ast
import ctypes
import importlib
import sys

PR_GET_DUMPABLE = 3

# What the lean fork server imports: the standard library's cheap modules that scripts use most.
# A script that imports nothing else (and has no async def, which would import asyncio) runs
# from the lean fork server: a third of the memory to copy, so its fork and its child's exit
# cost less (measured: trivial runs at 2 at once, 405-461 -> 503-522 a second). Not random: it
# reseeds itself in every child that is forked once it is loaded (~45 copied pages a run).
LIGHT_MODULES = frozenset({
    "__future__", "base64", "collections", "copy", "dataclasses", "datetime", "enum", "functools", "heapq",
    "itertools", "json", "math", "operator", "os", "pprint", "re", "string", "struct", "sys", "textwrap",
    "time", "typing", "zlib",
    "flowmill",  # the SDK (steps, waits, tasks): its HTTP calls import urllib.request only when made
})


def is_light(source: str) -> bool:
    """Whether `source` can run from the lean fork server (see LIGHT_MODULES)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef):
            return False
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["."]
        else:
            continue
        if any(name.split(".")[0] not in LIGHT_MODULES for name in names):
            return False
    return True


def preload(lean: bool, libc: ctypes.CDLL) -> None:
    """Import, once, what scripts import most, so that every child has it for free: the light
    modules in a lean fork server, and httpx and wmill as well in the full one."""
    for name in sorted(LIGHT_MODULES):
        importlib.import_module(name)
    if not lean:
        # httpx imports its command line (rich, click, pygments: ~30 ms, ~5 MB) when those are
        # installed; scripts never use it, so keep it out (it stays importable afterwards).
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
        try:
            import httpx  # noqa: F401
            import wmill  # noqa: F401
        except ImportError:
            pass
        finally:
            del sys.modules["httpx._main"]
    # Look the functions of libc that children call up and call them once here: ctypes builds a
    # function on its first use, and in every child that work would copy ~45 pages.
    libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    libc.fflush(None)
