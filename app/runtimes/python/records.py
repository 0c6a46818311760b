"""The names of a run's checkpoints (`job_step`), shared by the child and the server.

A workflow's steps are stored under their own names: a Flowmill step's name, a task's key
(`fetch`, `fetch_2`, ...), a Windmill step's key. Everything else a run stores is a record
whose name starts with one of `INTERNAL` (a prefix with a colon), so that what shows a run's
history can tell its steps from the rest:

    sleep:<n>             Flowmill sleep number n: its wake time (epoch ms)
    deadline:<name>       when a wait for <name> (approval:<x>, event:<type>:<n>) times out (epoch ms)
    retry:<step>          a step that failed and will be tried again: {attempt, nextAt}
    dispatch:<key>        a Flowmill task dispatched as a child run: the child's id
    task:function         the record of a run that carries out one Flowmill task: {function, key}
    approval:<id>         the answer to an approval: {approved, approver, payload}
    event:<type>:<n>      the n-th event of a type sent to the run: {type, payload, sentBy}
    wac-dispatch:<key>    a Windmill task dispatched as a child run: the child's id
    wac-sleep:<key>       a Windmill sleep: its wake time (epoch ms)
    wac-approval:<key>    a Windmill approval waited for: when it times out (epoch ms)
    wac-resumed:<id>      an answer through a URL that named no step, taken by the approval <key>
    wac:executing         the record of a run that carries out one Windmill task: {key}
"""

from __future__ import annotations

SLEEP = "sleep:"
DEADLINE = "deadline:"
RETRY = "retry:"
DISPATCH = "dispatch:"
TASK_FUNCTION = "task:function"
APPROVAL = "approval:"
EVENT = "event:"
WAC_DISPATCH = "wac-dispatch:"
WAC_SLEEP = "wac-sleep:"
WAC_APPROVAL = "wac-approval:"
WAC_RESUMED = "wac-resumed:"
WAC_EXECUTING = "wac:executing"

INTERNAL = (SLEEP, DEADLINE, RETRY, DISPATCH, "task:", APPROVAL, EVENT, WAC_DISPATCH, WAC_SLEEP, WAC_APPROVAL,
            WAC_RESUMED, "wac:")

# How a failed task or step is stored in its key's place: Windmill's marker, which `wmill`
# turns back into a `TaskError` (and so does `flowmill.task`).
ERROR_MARKER = "__wmill_error"


def is_step(name: str) -> bool:
    """Whether a checkpoint is a workflow's step (else one of the records above)."""
    return not name.startswith(INTERNAL)


def failure(key: str, error: dict[str, object] | None, child_job_id: str | None = None) -> dict[str, object]:
    """The marker stored as step `key` when it failed with `error` ({name, message, stack?})."""
    error = dict(error or {})
    name = str(error.get("name") or "Error")
    message = str(error.get("message") or f"{name} in step {key}")
    body: dict[str, object] = {"name": name, "message": message}
    stack = error.get("stack") or error.get("traceback")
    if stack:
        body["stack"] = str(stack)
    if isinstance(error.get("extra"), dict):
        body["extra"] = error["extra"]
    marker: dict[str, object] = {ERROR_MARKER: True, "message": message, "step_key": key, "result": {"error": body}}
    if child_job_id is not None:
        marker["child_job_id"] = child_job_id
    return marker


def is_failure(value: object) -> bool:
    """Whether a stored value is a failure marker (`failure`)."""
    return isinstance(value, dict) and value.get(ERROR_MARKER) is True
