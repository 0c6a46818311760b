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
`flowmill.sleep(s)`, `flowmill.wait_for_approval(name)` and `flowmill.wait_for_event(type)`
end the run's turn: it waits holding no process, then runs again from the top, its stored
steps replayed, and goes past the wait (so put work before a wait in steps).

It needs nothing beyond the standard library, so it costs a script no dependency.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["FlowmillError", "approval_urls", "get_credential", "get_resource", "get_variable", "sleep", "step",
           "wait_for_approval", "wait_for_event"]

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
    try:
        from app.runtimes.python import steps
    except ImportError:
        return None
    return steps


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding a process (outside a run: time.sleep)."""
    steps = _steps()
    if steps is None:
        import time
        time.sleep(seconds)
        return
    steps.sleep(seconds)


def wait_for_approval(name: str = "approval", timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for approval `name` (its URLs: `approval_urls(name)`): {approved, approver, payload};
    {approved: False, timedOut: True} once `timeout_s` has passed. Refusing cancels the run."""
    steps = _steps()
    if steps is None:
        raise FlowmillError(400, "not_in_a_run", "wait_for_approval needs a Flowmill run")
    return steps.wait_for_approval(name, timeout_s)


def wait_for_event(event_type: str, timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for the next event of `event_type` sent to this run (POST /api/v1/jobs/{id}/events):
    {type, payload, sentBy}; events sent before are kept, each returned once, in order."""
    steps = _steps()
    if steps is None:
        raise FlowmillError(400, "not_in_a_run", "wait_for_event needs a Flowmill run")
    return steps.wait_for_event(event_type, timeout_s)


def approval_urls(name: str = "approval", approver: str = "") -> dict[str, str]:
    """The signed URLs that answer approval `name` of this run: approvalPage, resume, cancel."""
    job_id = os.environ.get("WM_JOB_ID") or os.environ.get("FLOWMILL_JOB_ID")
    if not job_id:
        raise FlowmillError(400, "not_in_a_run", "approval_urls needs a Flowmill run")
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


def step(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` once per run, its JSON result stored before the run goes on (a
    stored step returns its result when the run runs again). Names are unique in a run; a
    result is at most 1 MiB of JSON. Outside a Flowmill run it just calls `fn`."""
    steps = _steps()
    if steps is None:
        return fn(*args, **kwargs)
    return steps.step(name, fn, *args, **kwargs)
