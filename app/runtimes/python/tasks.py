"""Flowmill's tasks, from inside a workflow's child: functions that run as child runs.

    @task(timeout=60)
    def charge(order: dict) -> dict: ...

    receipt = charge(order)                          # a child run; the workflow waits for it
    receipts = parallel(orders, charge, concurrency=10)  # child runs, at most 10 at a time

Calling a task inside a run ends the turn: the server starts a run of kind `task` that calls
the function's body with the call's arguments (the same script version; the function must be
at the script's top level), and the workflow waits for it holding no process. Its result is
stored as the task's step (named after the function: `charge`, `charge_2`, ... in call order),
so the next turn's replay returns it; a task that failed raises `TaskError` there. Inside a
task's own run, and outside Flowmill, tasks run in place.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from app.runtimes.python import records, steps


class TaskError(Exception):
    """A task (or a step of a Windmill workflow) failed: `step_key` names it, `child_job_id`
    is the run that carried it out, `error` its {name, message, stack?}."""

    def __init__(self, message: str, *, step_key: str = "", child_job_id: str | None = None,
                 error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.step_key = step_key
        self.child_job_id = child_job_id
        self.error = error or {}


_counters: dict[str, int] = {}


def _key(name: str) -> str:
    """The next step key for a task named `name` in this turn: `name`, `name_2`, ..."""
    count = _counters.get(name, 0)
    while True:
        count += 1
        key = name if count == 1 else f"{name}_{count}"
        if key not in steps._Run.seen:
            break
    _counters[name] = count
    steps._Run.seen.add(key)
    return key


def begin() -> None:
    """Called by the child's runner before the script runs: keys start over each turn."""
    _counters.clear()


def _resolved(key: str) -> Any:
    value = json.loads(steps._Run.stored[key])
    if records.is_failure(value):
        error = (value.get("result") or {}).get("error") or {}
        raise TaskError(value.get("message") or f"task {key} failed", step_key=key,
                        child_job_id=value.get("child_job_id"), error=error)
    return value


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None, timeout: float | None = None,
         priority: int | None = None, retry: steps.Retry | None = None, concurrency_limit: int | None = None,
         concurrency_key: str | None = None) -> Any:
    """Make `fn` (a function at the script's top level) a task: called in a workflow, it runs as
    a child run and its result is checkpointed. `timeout` (s), `priority`, `concurrency_limit`
    and `concurrency_key` are the child run's; `retry` retries the child run after a failure
    (`limit` times, waiting `delay` then doubling). Used as `@task` or `@task(...)`."""
    options: dict[str, Any] = {k: v for k, v in (("timeout", timeout), ("priority", priority),
                                                 ("concurrency_limit", concurrency_limit),
                                                 ("concurrency_key", concurrency_key)) if v is not None}
    if retry is not None:
        options["retries"], options["retry_delay"] = retry.limit, retry.delay

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        label = name or function.__name__
        signature = inspect.signature(function)
        is_async = inspect.iscoroutinefunction(function)

        def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            if "<locals>" in function.__qualname__ or "." in function.__qualname__:
                raise TypeError(f"task {label}: a task is a function at the script's top level (its run calls it by name)")
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"task {label}: {error}") from None
            arguments = dict(bound.arguments)
            for parameter in signature.parameters.values():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD and parameter.name in arguments:
                    arguments.update(arguments.pop(parameter.name))
                elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                    raise TypeError(f"task {label} takes *{parameter.name}: a task's arguments are named")
            try:
                msgspec.json.encode(arguments)
            except (TypeError, msgspec.EncodeError) as error:
                raise TypeError(f"the arguments of task {label} are not JSON: {error}") from None
            return {"function": function.__name__, "args": arguments, "options": options}

        def dispatch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            key = _key(label)
            if key in steps._Run.stored:
                steps.reach([key], False, key)
                return _resolved(key)
            steps.reach([], True, key)
            steps.suspend(children="all", dispatch=[{"key": key, **call(args, kwargs)}])

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not steps.in_run() or steps.in_task():
                return function(*args, **kwargs)
            if is_async:
                async def later() -> Any:
                    return dispatch(args, kwargs)
                return later()
            return dispatch(args, kwargs)

        wrapper._flowmill_task = {"label": label, "call": call, "async": is_async}  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


def parallel(items: Sequence[Any], fn: Callable[..., Any], concurrency: int | None = None) -> Any:
    """`[fn(item) for item in items]`, where `fn` is a task: the items' child runs are
    dispatched together, at most `concurrency` at a time (in batches), and the workflow waits
    for them holding no process. A failed one raises its TaskError once its batch is done.
    With an async task it returns an awaitable, as calling the task does."""
    meta = getattr(fn, "_flowmill_task", None)
    items = list(items)
    if meta is None or not steps.in_run() or steps.in_task():
        if meta is not None and meta["async"] or inspect.iscoroutinefunction(fn):
            async def gathered() -> list[Any]:
                import asyncio  # only here: the lean fork server does not load it

                return list(await asyncio.gather(*(fn(item) for item in items)))
            return gathered()
        return [fn(item) for item in items]
    results = _parallel(items, meta, concurrency)
    if meta["async"]:
        async def done() -> list[Any]:
            return results
        return done()
    return results


def _parallel(items: list[Any], meta: dict[str, Any], concurrency: int | None) -> list[Any]:
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError("parallel(): concurrency is a whole number of at least 1")
    keys = [_key(meta["label"]) for _ in items]
    size = concurrency or max(1, len(items))
    results: list[Any] = []
    for start in range(0, len(items), size):
        batch = list(zip(keys[start:start + size], items[start:start + size]))
        done = [key for key, _ in batch if key in steps._Run.stored]
        missing = [(key, item) for key, item in batch if key not in steps._Run.stored]
        steps.reach(done, bool(missing), missing[0][0] if missing else "")
        if missing:
            steps.suspend(children="all", dispatch=[{"key": key, **meta["call"]((item,), {})} for key, item in missing])
        results += [_resolved(key) for key, _ in batch]
    return results


def body_of(module: dict[str, Any], function: str) -> Callable[..., Any]:
    """The body of the task `function` of a script's module, which a task's run calls."""
    found = module.get(function)
    if found is None or not callable(found):
        raise steps.StepError(f"the script has no top-level function {function}() to run as a task")
    return getattr(found, "__wrapped__", found)
