"""The server's side of a workflow's turns: what a run replays, and what its turn's end does.

A workflow (a script whose `main` is `@workflow`, Flowmill's or wmill's) runs in turns: each
turn its child replays `main` from the top with the run's checkpoints and ends with a result,
a failure, or a wait. Around each turn this module:

before it (`begin`) — stores, as the workflow's steps, what came since the last turn: the
results of the child runs it dispatched (a failed one as Windmill's `__wmill_error` marker,
naming the child), Windmill sleeps whose time has passed, approvals answered (Windmill's
`{value, approver, approved}`), and the timeouts of waits (`deadline:` records) that passed;
an approval of a Windmill workflow that timed out cancels the run, as in Windmill. A run that
carries out one task replays with its parent's checkpoints (a Windmill task) or calls the
task's function (a Flowmill task).

after it (`end`) — carries out the wait it ended with: tasks dispatched become child runs,
inserted in the commit that makes the workflow WAITING for them (app/engine/executor.py), with
the task's options as their policy; a Windmill sleep or approval becomes a timer (and the
approval's name: its resume URLs carry the step key); a pause asked for meanwhile makes the run
PAUSED instead. The records it keeps are named in app/runtimes/python/records.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any

import msgspec

from app.engine import queue
from app.engine.executor import Outcome, QueuedJob, now_ms
from app.engine.queue import FINAL, NewRun, Policy, Wait
from app.errors import BadRequest, Conflict, FlowmillError, Forbidden, TooLarge
from app.ids import random_uuid
from app.runtimes.python import records
from app.runtimes.python.steps import MAX_STEP_BYTES
from app.runtimes.python.wac import step_failure
from app.services.actor import Actor
from app.store.base import Statement

if TYPE_CHECKING:
    from app.services.jobs import Jobs, RunInput

TRIGGER_KIND = "workflow"  # what starts a workflow's child runs
# The options of a Windmill task that become its run's policy (`tag` has no meaning here; its
# `retry` is wmill's own, carried out by the workflow's replay).
WAC_OPTIONS = ("timeout", "priority", "cache_ttl", "concurrent_limit", "concurrency_key", "concurrency_time_window_s")


@dataclasses.dataclass
class Turn:
    """What a run's child replays this turn."""

    steps: dict[str, str]  # name -> JSON text, in the order stored
    seen_seq: int = -1  # the last checkpoint the turn started from: what came after it wakes a wait at once
    wac_executing: str | None = None  # a Windmill task's run: the task's key
    task_function: str | None = None  # a Flowmill task's run: the function it calls
    cache_key: str = ""  # a task's run: what its result cache is keyed on besides the arguments


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def suspended(wait: dict[str, Any]) -> Outcome:
    """How a turn that a script ended with `suspend` (app.runtimes.python.steps) leaves it."""
    if wait.get("paused"):
        return Outcome("PAUSED")
    children = wait.get("children")
    until = wait.get("untilMs")
    return Outcome("WAITING", wait=Wait(
        until_ms=int(until) if isinstance(until, (int, float)) else None,
        children=children if children in ("all", "any") else None,
        approval=str(wait["approval"]) if wait.get("approval") is not None else None,
        event=str(wait["event"]) if wait.get("event") is not None else None,
    ))


def policy_of(options: dict[str, Any], default_key: str) -> Policy:
    """A task's run's policy from its options (wmill's names, and Flowmill's `retries`)."""
    limit = options.get("concurrent_limit") or options.get("concurrency_limit")
    window = options.get("concurrency_time_window_s")
    return Policy(
        timeout_s=float(options["timeout"]) if options.get("timeout") else None,
        max_attempts=1 + int(options.get("retries") or 0), backoff_s=float(options.get("retry_delay") or 1.0),
        priority=int(options.get("priority") or 0),
        concurrency_key=str(options.get("concurrency_key") or default_key) if limit else None,
        concurrency_limit=int(limit) if limit else None, concurrency_window_s=float(window) if window else None,
        cache_ttl_s=float(options["cache_ttl"]) if options.get("cache_ttl") else None,
    )


class WorkflowRuntime:
    """Prepares and ends the turns of runs that checkpoint (owned by `Jobs`)."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.runs = jobs.runs

    # -- before a turn -----------------------------------------------------------------------------

    async def begin(self, job: QueuedJob, run: RunInput) -> Turn | Outcome:
        """What the run's child replays; or, without a child, how the turn ends (paused, or an
        approval that timed out)."""
        if run.pause:
            return Outcome("PAUSED", writes=(queue.clear_pause(job.id),))
        if job.kind == "task":
            own = {row["name"]: row["result"] for row in await self.runs.steps(job.id)}
            if records.WAC_EXECUTING in own:
                key = json.loads(own[records.WAC_EXECUTING])["key"]
                parent = (await self._steps(run.parent_job))[0] if run.parent_job else {}
                return Turn(parent, wac_executing=key, cache_key=key)
            if records.TASK_FUNCTION in own:  # its own steps (a retry of the task replays them)
                record = json.loads(own.pop(records.TASK_FUNCTION))
                return Turn(own, task_function=record["function"], cache_key=record["key"])
        if job.attempt == 1 and not job.resumed and job.kind == "script":
            return Turn({})  # a fresh script's first attempt has no checkpoints: no read on the common path
        steps, seen = await self._steps(job.id)
        writes, outcome = await self._arrived(job.id, steps)
        if writes:
            results = await self.db.write(*writes, durable=False)
            seen += sum(result.rowcount for result in results)
        return outcome or Turn(steps, seen)

    async def _steps(self, job_id: str) -> tuple[dict[str, str], int]:
        rows = await self.runs.steps(job_id)
        return {row["name"]: row["result"] for row in rows}, max((row["seq"] for row in rows), default=-1)

    async def _arrived(self, job_id: str, steps: dict[str, str]) -> tuple[list[Statement], Outcome | None]:
        """The steps that came since the last turn, stored (and added to `steps`)."""
        now = now_ms()
        writes: list[Statement] = []

        def store(name: str, text: str) -> None:
            writes.append(queue.checkpoint(job_id, name, text, now))
            steps[name] = text

        dispatched = {}
        for name, text in steps.items():
            for prefix in (records.DISPATCH, records.WAC_DISPATCH):
                if name.startswith(prefix) and name[len(prefix):] not in steps:
                    dispatched[name[len(prefix):]] = json.loads(text)
        if dispatched:
            children = await self._children(list(dispatched.values()))
            for key, child_id in dispatched.items():
                row = children.get(child_id)
                if row is None:
                    store(key, _json(records.failure(key, {"name": "TaskLost", "message": (
                        f"the run {child_id} that carried out task {key} is gone")}, child_id)))
                elif row["status"] in FINAL:
                    store(key, self._result(key, row))
        outcome = None
        for name, text in list(steps.items()):
            if name.startswith(records.WAC_SLEEP):
                key = name[len(records.WAC_SLEEP):]
                if key not in steps and json.loads(text) <= now:
                    store(key, "null")
            elif name.startswith(records.DEADLINE):
                key = name[len(records.DEADLINE):]
                if key not in steps and json.loads(text) <= now:
                    store(key, _json(_timed_out(key)))
            elif name.startswith(records.WAC_APPROVAL):
                key = name[len(records.WAC_APPROVAL):]
                if key in steps:
                    continue
                answer = self._approval(key, steps)
                if answer is not None:
                    resume_id, value = answer
                    if resume_id != key:  # through a URL that named no step: taken once, by this one
                        store(f"{records.WAC_RESUMED}{resume_id}", _json(key))
                    store(key, _json(value))
                elif json.loads(text) is not None and json.loads(text) <= now:
                    outcome = Outcome("CANCELLED", error={"name": "ApprovalTimeout", "message": (
                        f"approval {key} was not given in time: the workflow is cancelled")})
        return writes, outcome

    @staticmethod
    def _approval(key: str, steps: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
        """(the resume id, Windmill's answer) for the approval `key`: answered through its own
        URLs, else through a URL that named no step (`get_resume_urls`) and not taken yet."""
        candidates = [key] + [name[len(records.APPROVAL):] for name in steps if name.startswith(records.APPROVAL)
                              and name[len(records.APPROVAL):].isdigit()
                              and f"{records.WAC_RESUMED}{name[len(records.APPROVAL):]}" not in steps]
        for resume_id in candidates:
            text = steps.get(f"{records.APPROVAL}{resume_id}")
            if text is not None:
                answer = json.loads(text)
                payload = answer.get("payload")
                return resume_id, {"value": {} if payload is None else payload,
                                   "approver": answer.get("approver") or "anonymous", "approved": True}
        return None

    async def _children(self, ids: list[str]) -> dict[str, Any]:
        found = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join(f"${i + 1}" for i in range(len(chunk)))
            for row in await self.db.fetch(f"SELECT id, status, result, error FROM job WHERE id IN ({marks})", *chunk):
                found[row["id"]] = row
        return found

    @staticmethod
    def _result(key: str, row: Any) -> str:
        """What a finished child run leaves as its task's step: its result, or the failure marker."""
        if row["status"] == "SUCCESS":
            text = row["result"] or "null"
            if len(text.encode()) <= MAX_STEP_BYTES:
                return text
            error = {"name": "ResultTooLarge", "message": (
                f"the result of task {key} is {len(text.encode())} bytes; a step's result is limited to "
                f"{MAX_STEP_BYTES} bytes (store large data elsewhere and return a reference)")}
        else:
            error = json.loads(row["error"]) if row["error"] else {}
            if not isinstance(error, dict):
                error = {}
            error.setdefault("name", row["status"])
            error.setdefault("message", f"task {key} ended {row['status']}")
        return _json(records.failure(key, error, row["id"]))

    # -- during a turn -------------------------------------------------------------------------------

    async def inline_step(self, actor: Actor, job_id: str, key: str, result: Any) -> dict[str, Any] | None:
        """Store step `key` of a Windmill workflow's run from the run itself (wmill's fast path
        for `wmill.step`); the record stored for a failed step (to raise from), else None.
        Forbidden (403) to anybody but the run's own token; TooLarge (413) past the step size;
        Conflict (409), the step stored, when the run is asked to pause."""
        if actor.run_id != job_id:
            raise Forbidden("a workflow's steps are checkpointed by its own run only")
        if not isinstance(key, str) or not 0 < len(key) <= 255 or not records.is_step(key):
            raise BadRequest(f"a step's key is 1-255 characters, not starting with {', '.join(records.INTERNAL)}")
        failure = step_failure(key, result) if records.is_failure(result) else None
        text = _json(failure if failure is not None else result)
        if len(text.encode()) > MAX_STEP_BYTES:
            raise TooLarge(f"the result of step {key!r} is {len(text.encode())} bytes; a step's result is limited to "
                           f"{MAX_STEP_BYTES} bytes (store large data elsewhere and return a reference)")
        stored, pause = await self.db.write(queue.checkpoint(job_id, key, text, now_ms()), queue.pause_asked(job_id),
                                            durable=False)
        if pause.rowcount:
            # wmill then takes its slower path: the turn's end stores the step (again: kept as
            # it is), and the answer to that checkpoint pauses the run at this step boundary.
            raise Conflict("the run is asked to pause: this step ends its turn")
        return failure

    # -- after a turn --------------------------------------------------------------------------------

    async def end(self, job: QueuedJob, run: RunInput, role: str, turn: Turn, wait: dict[str, Any]) -> Outcome:
        """How a turn that ended waiting leaves the run: what it waits for, and what to write
        with it (child runs to start, records of its waits)."""
        now = now_ms()
        if wait.get("paused"):
            return Outcome("PAUSED", writes=(queue.clear_pause(job.id),))
        if "wac" in wait:
            outcome = await self._wac(job, run, role, turn, wait["wac"], now)
        elif "dispatch" in wait:
            outcome = await self._dispatch(job, run, role, turn, wait["dispatch"], records.DISPATCH, now)
        else:
            outcome = suspended(wait)
            if outcome.wait is not None and (outcome.wait.approval or outcome.wait.event):
                outcome = dataclasses.replace(outcome, wakes=(queue.wake_if_answered(job.id, turn.seen_seq, now),))
        if outcome.status == "WAITING" and await self.db.fetchval(
                "SELECT pause_requested FROM job WHERE id = $1", job.id):
            outcome = dataclasses.replace(outcome, status="PAUSED", wait=None, wakes=(),
                                          writes=(*outcome.writes, queue.clear_pause(job.id)))
        return outcome

    async def _wac(self, job: QueuedJob, run: RunInput, role: str, turn: Turn, answer: dict[str, Any],
                   now: int) -> Outcome:
        kind = answer.get("type")
        if kind == "dispatch":
            specs = [{"key": step["key"], "name": step.get("name") or step["key"], "script": step.get("script"),
                      "dispatch_type": step.get("dispatch_type", "inline"), "args": step.get("args") or {},
                      "options": {name: step[name] for name in WAC_OPTIONS if step.get(name) is not None}}
                     for step in answer.get("steps") or []]
            outcome = await self._dispatch(job, run, role, turn, specs, records.WAC_DISPATCH, now)
            retried = [_retry_record(job.id, spec["key"], now, now) for spec in specs
                       if f"{records.WAC_DISPATCH}{spec['key']}" not in turn.steps]
            return dataclasses.replace(outcome, writes=(*outcome.writes, *filter(None, retried)))
        key = str(answer.get("key"))
        if kind == "sleep":
            record = f"{records.WAC_SLEEP}{key}"
            wake = json.loads(turn.steps[record]) if record in turn.steps else now + int(answer.get("seconds") or 1) * 1000
            writes = () if record in turn.steps else (queue.checkpoint(job.id, record, _json(wake), now),)
            backoff = None if record in turn.steps else _retry_record(job.id, key, wake, now)
            return Outcome("WAITING", wait=Wait(until_ms=wake), writes=(*writes, *filter(None, [backoff])))
        if kind == "approval":
            record = f"{records.WAC_APPROVAL}{key}"
            timeout = answer.get("timeout")
            deadline = json.loads(turn.steps[record]) if record in turn.steps else (
                now + int(timeout) * 1000 if timeout else None)
            writes = () if record in turn.steps else (queue.checkpoint(job.id, record, _json(deadline), now),)
            if self._approval(key, turn.steps) is not None:
                deadline = now  # answered before the workflow came to wait for it: its next turn takes it at once
            return Outcome("WAITING", wait=Wait(until_ms=deadline, approval=key), writes=writes,
                           wakes=(queue.wake_if_answered(job.id, turn.seen_seq, now),))
        return Outcome("FAILED", error={"name": "WorkflowError", "message": f"a turn ended with {kind!r}, unknown here"})

    async def _dispatch(self, job: QueuedJob, run: RunInput, role: str, turn: Turn, specs: list[dict[str, Any]],
                        prefix: str, now: int) -> Outcome:
        """Child runs for the tasks not dispatched yet, and the run WAITING for all its children."""
        writes: list[Statement] = []
        children: list[QueuedJob] = []
        for spec in specs:
            key = str(spec["key"])
            if f"{prefix}{key}" in turn.steps or key in turn.steps:
                continue  # dispatched in an earlier turn and still running (woken early)
            try:
                statements, child = await self._child(job, run, role, spec, prefix, now)
            except FlowmillError as error:  # no such script or flow, arguments that do not fit: the task's failure
                writes.append(queue.checkpoint(job.id, key, _json(records.failure(
                    key, {"name": type(error).__name__, "message": error.message})), now))
                continue
            writes += statements
            children.append(child)
        self.jobs.started[TRIGGER_KIND] += len(children)
        return Outcome("WAITING", wait=Wait(children="all"), writes=tuple(writes), children=tuple(children))

    async def _child(self, job: QueuedJob, run: RunInput, role: str, spec: dict[str, Any], prefix: str,
                     now: int) -> tuple[list[Statement], QueuedJob]:
        """The INSERT of one task's run (and its records), and how the executor is handed it."""
        key = str(spec["key"])
        child_id = random_uuid()
        options = spec.get("options") or {}
        detail = f"{job.id}:{key}"
        root = run.root_job or job.id
        dispatch_type = spec.get("dispatch_type", "inline")
        actor = Actor(run.created_by, job.workspace, role, run_id=job.id, run_cap=role)
        statements: list[Statement] = []
        if prefix == records.DISPATCH or dispatch_type == "inline":
            policy = policy_of(options, f"{run.path}:{spec.get('name') or spec.get('function') or key}")
            if prefix == records.DISPATCH:  # a Flowmill task: its function, given the call's arguments
                args, refs = _json(spec.get("args") or {}), False
                record = (records.TASK_FUNCTION, {"function": spec["function"], "key": key})
            else:  # a Windmill task: the workflow replayed with the parent's arguments, up to the task
                args, refs = run.args, run.refs
                record = (records.WAC_EXECUTING, {"key": key})
            new = NewRun(id=child_id, workspace=job.workspace, kind="task", path=run.path, args=args, status="QUEUED",
                         trigger_kind=TRIGGER_KIND, trigger_detail=detail, created_by=run.created_by, created_at=now,
                         scheduled_for=now, policy=policy, script_hash=run.hash, parent=job.id, root=root,
                         resolve_refs=refs, role_cap=run.cap)
            statements += [queue.insert(new), queue.checkpoint(child_id, record[0], _json(record[1]), now)]
            queued = QueuedJob.new(child_id, job.workspace, "task", run.path, policy, job.id, now)
        elif dispatch_type == "script":
            version = await self.jobs.scripts.for_run(job.workspace, str(spec.get("script")))
            args_text, _ = await self.jobs._arguments(actor, version, spec.get("args") or {}, (), False, None)
            base = version["settings"].policy(version["path"])
            given = policy_of(options, base.concurrency_key or version["path"])
            policy = dataclasses.replace(base, **{field.name: getattr(given, field.name) for field in
                                                  dataclasses.fields(Policy) if field.name in _given(options)})
            kind = "workflow" if version["workflow"] else "script"
            new = NewRun(id=child_id, workspace=job.workspace, kind=kind, path=version["path"], args=args_text,
                         status="QUEUED", trigger_kind=TRIGGER_KIND, trigger_detail=detail, created_by=run.created_by,
                         created_at=now, scheduled_for=now, policy=policy, script_hash=version["hash"], parent=job.id,
                         root=root, role_cap=run.cap)
            statements.append(queue.insert(new))
            queued = QueuedJob.new(child_id, job.workspace, kind, version["path"], policy, job.id, now)
        elif dispatch_type == "flow":
            executions = getattr(self.jobs, "executions", None)
            if executions is None:
                raise BadRequest("this server runs no flows: a workflow's task_flow cannot be dispatched")
            from app.services.jobs import Trigger

            new, _ = await executions.new_run(actor, str(spec.get("script")), spec.get("args") or {},
                                              Trigger(TRIGGER_KIND, detail), parent=job.id, root=root, job_id=child_id)
            statements.append(queue.insert(new))
            queued = executions.queued(new)
        else:
            raise BadRequest(f"a task's dispatch type is inline, script or flow, not {dispatch_type!r}")
        statements.append(queue.checkpoint(job.id, f"{prefix}{key}", _json(child_id), now))
        return statements, queued


# wmill names a retried task's attempts `key#2`, `key#3`, ... and the sleeps between them
# `key#retry2`, ...: the run keeps a `retry:<key>` record of them, as Flowmill's steps do.
_ATTEMPT = re.compile(r"(.+)#(retry)?(\d+)")


def _retry_record(job_id: str, key: str, next_at: int, now: int) -> Statement | None:
    """`retry:<task>` {attempt, nextAt} when `key` is an attempt of a retried Windmill task (or
    the backoff before one): the attempts that failed so far, and when the next one starts."""
    found = _ATTEMPT.fullmatch(key)
    if found is None:
        return None
    attempt = int(found.group(3)) - 1
    return queue.checkpoint(job_id, f"{records.RETRY}{found.group(1)}", _json({"attempt": attempt, "nextAt": next_at}),
                            now, replace=True)


def _given(options: dict[str, Any]) -> set[str]:
    """The policy fields a task's options set (the others keep the script's)."""
    fields = {"timeout": "timeout_s", "priority": "priority", "cache_ttl": "cache_ttl_s",
              "concurrent_limit": "concurrency_limit", "concurrency_key": "concurrency_key",
              "concurrency_time_window_s": "concurrency_window_s"}
    given = {fields[name] for name in options if name in fields}
    if "concurrency_limit" in given:
        given.add("concurrency_key")
    return given


def _timed_out(key: str) -> dict[str, Any]:
    """What a wait that timed out leaves as its key (see app.runtimes.python.steps)."""
    if key.startswith(records.APPROVAL):
        return {"approved": False, "timedOut": True}
    return {"type": key[len(records.EVENT):].rsplit(":", 1)[0], "timedOut": True}
