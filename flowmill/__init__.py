"""What a script imports to reach Flowmill from inside a run: `import flowmill`.

    import flowmill

    def main():
        token = flowmill.get_credential("API_TOKEN")   # a credential's value
        db = flowmill.get_resource("f/demo/db")         # a resource, references resolved
        url = flowmill.get_variable("f/demo/url")       # a variable (a secret one too)

Inside a run it acts as the run (`WM_BASE_URL`, `WM_TOKEN`, `WM_WORKSPACE`, which Flowmill
sets), with the run's rights: a secret needs the executor role. Every secret a run is given
is masked (`***`) in the run's log, result and error. Outside a run, `FLOWMILL_URL`,
`FLOWMILL_TOKEN` and `FLOWMILL_WORKSPACE` say where and who (a person's token reads variables
and resources; a credential's value is given only to runs).

A step is checkpointed: `flowmill.step("charge", charge, order)` runs `charge(order)` once per
run and stores its JSON result before the script goes on; when the run runs again (a retry
after a failure or a crash), a stored step returns its result without running again.
`flowmill.sleep(s)`, `sleep_until(t)`, `wait_for_approval(name)` and `wait_for_event(type)`
end the run's turn: it waits holding no process, then runs again from the top, its stored
steps replayed, and goes past the wait (so put work before a wait in steps).

A workflow is a script whose `main` is decorated `@workflow` (or `@workflow(name="x")`): its
runs are durable instances (`/api/workflows`). It calls steps, waits, and `@task` functions,
which run as child runs while it waits holding no process (`parallel(items, task)` runs many).

    from flowmill import workflow, step, task, parallel, sleep, Retry

    @task
    def charge(order: dict) -> dict: ...

    @workflow
    def main(orders: list[dict]):
        checked = step("check", check, orders, retry=Retry(limit=3, delay=5))
        receipts = parallel(checked, charge, concurrency=10)
        sleep(3600)
        return receipts

It needs nothing beyond the standard library, so it costs a script no dependency.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["EventTimeout", "FlowmillError", "NonDeterminismError", "Retry", "StepError", "TaskError", "approval_urls",
           "get_credential", "get_resource", "get_variable", "parallel", "sleep", "sleep_until", "step", "task",
           "wait_for_approval", "wait_for_event", "workflow"]

TIMEOUT_S = 30.0


class FlowmillError(Exception):
    """The server refused or failed a call: `status` is its HTTP status, `code` its error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code, self.message = status, code, message


def get_credential(name: str) -> str:
    """The value of credential `name` of the run's workspace."""
    return _get(f"credentials/value/{_quote(name)}")["value"]


def get_variable(path: str) -> str:
    """The value of the variable at `path` (e.g. `f/demo/url`)."""
    return _get(f"variables/value/{_quote(path)}")


def get_resource(path: str, interpolate: bool = True) -> Any:
    """The value of the resource at `path`, with its `$var:`/`$res:`/`$cred:` references
    resolved unless `interpolate` is False."""
    return _get(f"resources/value/{_quote(path)}" + ("" if interpolate else "?interpolate=false"))


def _quote(path: str) -> str:
    return urllib.parse.quote(path.strip("/"), safe="/")


def _where() -> tuple[str, str, str]:
    """(base URL, token, workspace): the run's, else the FLOWMILL_* ones."""
    env = os.environ
    base = env.get("WM_BASE_URL") or env.get("FLOWMILL_URL") or "http://127.0.0.1:8080"
    token = env.get("WM_TOKEN") or env.get("FLOWMILL_TOKEN") or ""
    workspace = env.get("WM_WORKSPACE") or env.get("FLOWMILL_WORKSPACE") or "main"
    return base.rstrip("/"), token, workspace


def _get(tail: str) -> Any:
    import urllib.error  # here, not at the top: a script that only takes steps does not pay for HTTP
    import urllib.request

    base, token, workspace = _where()
    prefix = "/api/v1" if workspace == "main" else f"/api/v1/w/{urllib.parse.quote(workspace, safe='')}"
    request = urllib.request.Request(f"{base}{prefix}/{tail}", headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read()).get("error", {})
        except (ValueError, AttributeError):
            body = {}
        raise FlowmillError(error.code, body.get("code", "error"), body.get("message", error.reason)) from None


def _steps():  # type: ignore[no-untyped-def]
    """The run's steps (app.runtimes.python.steps: its child has it, the fork server loaded
    it), or None outside a Flowmill run."""
    return _runtime[0] if _runtime and _runtime[0].in_run() else None


try:  # inside a Flowmill run (and wherever Flowmill is installed): the runtime's own
    from app.runtimes.python import steps as _steps_module, tasks as _tasks_module

    _runtime: list[Any] = [_steps_module]
    Retry = _steps_module.Retry
    StepError = _steps_module.StepError
    NonDeterminismError = _steps_module.NonDeterminismError
    EventTimeout = _steps_module.EventTimeout
    TaskError = _tasks_module.TaskError
    task = _tasks_module.task
    parallel = _tasks_module.parallel
except ImportError:  # elsewhere: steps run in place, tasks are plain calls
    import dataclasses as _dataclasses

    _runtime = []

    class StepError(Exception):  # type: ignore[no-redef]
        """A step cannot be taken."""

    class NonDeterminismError(StepError):  # type: ignore[no-redef]
        """A replay reached the run's stored steps in another order."""

    class EventTimeout(Exception):  # type: ignore[no-redef]
        """`wait_for_event` waited longer than its timeout."""

    class TaskError(Exception):  # type: ignore[no-redef]
        """A task failed."""

    @_dataclasses.dataclass(frozen=True)
    class Retry:  # type: ignore[no-redef]
        """How a failed step is tried again (see app.runtimes.python.steps.Retry)."""

        limit: int = 3
        delay: float = 1.0
        backoff: str = "exponential"
        non_retryable: tuple[type[BaseException], ...] = ()

        def wait_s(self, retry: int) -> float:
            if self.backoff == "constant":
                return float(self.delay)
            if self.backoff == "linear":
                return float(self.delay * retry)
            return float(self.delay * 2 ** (retry - 1))

    def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:  # type: ignore[no-redef]
        """Outside a Flowmill run a task is a plain function."""
        return fn if fn is not None else (lambda function: function)

    def parallel(items: Any, fn: Callable[..., Any], concurrency: int | None = None) -> Any:  # type: ignore[no-redef]
        """Outside a Flowmill run: `[fn(item) for item in items]`."""
        return [fn(item) for item in items]


def workflow(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Mark `main` as a durable workflow: `@workflow`, or `@workflow(name="orders.fulfil")` (by
    default the name is the script's path with `/` as `.`). Its runs are workflow instances;
    it runs as any script does, its steps replayed each turn."""
    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function._flowmill_workflow = name  # type: ignore[attr-defined]
        return function

    return mark(fn) if fn is not None else mark


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding a process (outside a run: time.sleep)."""
    steps = _steps()
    if steps is None:
        import time
        time.sleep(seconds)
        return
    steps.sleep(seconds)


def sleep_until(when: Any) -> None:
    """Wait until `when` (epoch seconds, or a datetime) without holding a process (outside a
    run: time.sleep until then)."""
    steps = _steps()
    if steps is None:
        import datetime
        import time
        moment = when.timestamp() if isinstance(when, datetime.datetime) else float(when)
        time.sleep(max(0.0, moment - time.time()))
        return
    steps.sleep_until(when)


def wait_for_approval(name: str = "approval", timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for approval `name` (its URLs: `approval_urls(name)`): {approved, approver, payload};
    {approved: False, timedOut: True} once `timeout_s` has passed. Refusing cancels the run."""
    steps = _steps()
    if steps is None:
        raise FlowmillError(400, "not_in_a_run", "wait_for_approval needs a Flowmill run")
    return steps.wait_for_approval(name, timeout_s)


def wait_for_event(event_type: str, timeout: float | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for the next event of `event_type` sent to this run (POST /api/v1/jobs/{id}/events):
    {type, payload, sentBy}; events sent before are kept, each returned once, in order. With
    `timeout` (seconds), EventTimeout is raised once it has passed with none."""
    steps = _steps()
    if steps is None:
        raise FlowmillError(400, "not_in_a_run", "wait_for_event needs a Flowmill run")
    return steps.wait_for_event(event_type, timeout, timeout_s=timeout_s)


def approval_urls(name: str = "approval", approver: str = "") -> dict[str, str]:
    """The signed URLs that answer approval `name` of this run: approvalPage, resume, cancel."""
    job_id = os.environ.get("WM_JOB_ID") or os.environ.get("FLOWMILL_JOB_ID")
    if not job_id:
        raise FlowmillError(400, "not_in_a_run", "approval_urls needs a Flowmill run")
    import urllib.error
    import urllib.request

    base, token, workspace = _where()
    query = f"?approver={urllib.parse.quote(approver)}" if approver else ""
    request = urllib.request.Request(
        f"{base}/api/w/{urllib.parse.quote(workspace, safe='')}/jobs/resume_urls/{urllib.parse.quote(job_id)}/"
        f"{urllib.parse.quote(name, safe='')}{query}", headers={"Accept": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise FlowmillError(error.code, "error", error.reason) from None


def step(name: str, fn: Callable[..., T], *args: Any, retry: Any = None, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` once per run, its JSON result stored before the run goes on (a
    stored step returns its result when the run runs again). Names are unique in a run; a
    result is at most 1 MiB of JSON. `retry` (a `Retry`): tried again on failure, as it says.
    Outside a Flowmill run it just calls `fn` (retrying in place)."""
    steps = _steps()
    if steps is not None:
        return steps.step(name, fn, *args, retry=retry, **kwargs)
    if retry is None:
        return fn(*args, **kwargs)
    import time
    attempt = 1
    while True:
        try:
            return fn(*args, **kwargs)
        except retry.non_retryable:
            raise
        except Exception:
            if attempt > retry.limit:
                raise
            time.sleep(retry.wait_s(attempt))
            attempt += 1
