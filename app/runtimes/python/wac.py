"""Windmill's workflows as code, from inside a child: a `main` decorated `@wmill.workflow` runs
through the official `wmill` package's own replay (`wmill.client._run_workflow_async`).

Each turn, `main` runs from the top with the run's stored steps as its checkpoint
(`{"completed_steps": {key: value}}`); `wmill` returns what the turn came to, and this module
turns it into the child's answer:

- `complete`: the workflow's result (`Finished`);
- `dispatch` (tasks to run as child runs), `sleep`, `approval`: the end of the turn
  (`Suspended` with `{"wac": answer}`), which the server carries out
  (app/services/workflow_runtime.py) and resumes the workflow from;
- `inline_checkpoint`: a `wmill.step` whose result wmill could not post to the server (its
  fast path, `POST /api/w/{ws}/jobs/wac/inline_checkpoint/{job}`): stored here over the child
  protocol, then the workflow runs again in this same child with it completed.

A run that carries out one task (`ChildJob.wac_executing`) replays with its parent's steps and
`_executing_key`: wmill runs that task's body and answers `complete` with its result, or
raises the body's error, which fails the run (and the parent stores it as the task's failure).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.runtimes.python import records, steps
from app.runtimes.python.protocol import ChildJob


def is_workflow(entry: Callable[..., Any]) -> bool:
    """Whether `entry` is decorated `@wmill.workflow` (not Flowmill's `@workflow`, which runs
    as a plain function whose steps replay)."""
    return getattr(entry, "_is_workflow", False) is True and not hasattr(entry, "_flowmill_workflow")


def _loop_factory() -> Callable[[], Any] | None:
    """uvloop's event loop where it is installed (Flowmill's server runs on it): each of wmill's
    fast-path steps is an HTTP request, and uvloop's loop carries it with less overhead."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _round_trip(value: Any) -> Any:
    """`value` as JSON gives it back (wmill's encoding: what it cannot encode becomes text)."""
    return json.loads(json.dumps(value, default=str))


def run(entry: Callable[..., Any], job: ChildJob, kwargs: dict[str, Any]) -> Any:
    """Run the workflow's turn; its result when it completes. Raises `steps.Suspend` when the
    turn ends waiting, and whatever the workflow (or, for a task's run, the task) raised."""
    import asyncio  # loaded with wmill by the full fork server: free here

    from wmill import client

    completed = {name: json.loads(text) for name, text in job.steps.items() if records.is_step(name)}
    checkpoint: dict[str, Any] = {"completed_steps": completed}
    if job.wac_executing is not None:
        checkpoint["_executing_key"] = job.wac_executing
    while True:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            answer = runner.run(client._run_workflow_async(entry, checkpoint, kwargs))
        kind = answer.get("type")
        if kind == "complete":
            return answer.get("result")
        if kind == "inline_checkpoint":
            key = str(answer["key"])
            value = _round_trip(answer.get("result"))
            if records.is_failure(value):
                value = step_failure(key, value)
            steps.checkpoint(key, value)
            completed[key] = value
            continue
        if kind in ("dispatch", "sleep", "approval"):
            steps.suspend(wac=_round_trip(answer))
        raise steps.StepError(f"the wmill package answered a turn of the workflow with {kind!r}, unknown here")


def step_failure(key: str, marker: dict[str, Any]) -> dict[str, Any]:
    """The record of a failed `wmill.step`, as stored (the same by either path it comes)."""
    error = (marker.get("result") or {}).get("error") if isinstance(marker.get("result"), dict) else None
    if not isinstance(error, dict):
        error = {"name": "Error", "message": str(marker.get("message") or f"step {key} failed")}
    return records.failure(key, error)
