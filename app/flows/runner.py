"""The runner of flow executions: what the executor awaits for a run of kind `flow`.

An execution runs in turns. A turn walks the flow's tasks in order on the event loop: plugins
run in-process (async ones on the loop, plain functions on a thread), Python and shell tasks in
a walled-off child of the fork server. Each task that ends is checkpointed
(`app/flows/records.py`) before the next one starts: the commit survives a crash of the process
(it does not wait for the disk: SQLite's `synchronous=NORMAL`, PostgreSQL's
`synchronous_commit=off`; the execution's final status does), and a later turn skips every
task that is checkpointed. A task that must wait — `flow.sleep`, `flow.approval`, a subflow it
waits for — ends the turn WAITING: the execution gives back its slot and is woken by its timer,
the decision or the subflow's end. Parallel branches go on until each is done or waits.

When a task fails (its retries spent, `allowFailure` unset) the execution fails: its `errors`
tasks run with `execution.error` in scope, then its `finally` tasks (which also run after a
success), and it ends FAILED (TIMED_OUT past its flow-level `timeout`, counted from when it was
created). A cancel stops the turn where it is: running plugins are cancelled, a running Python
task's process is killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from app.engine import queue
from app.engine.executor import CancelToken, Outcome, QueuedJob, now_ms
from app.engine.logs import LogSink
from app.engine.masks import Masks, hide_json
from app.engine.queue import Wait
from app.flows import records
from app.flows.model import Flow, Task, load
from app.flows.records import TaskRecord
from app.flows.templating import TemplateError, Templates
from app.store.base import Database

log = logging.getLogger("flowmill.flows")


class Suspend(Exception):
    """A task (or several, in parallel branches) waits: the turn ends WAITING for this."""

    def __init__(self, until_ms: int | None = None, children: bool = False, approval: bool = False) -> None:
        super().__init__("waiting")
        self.until_ms = until_ms
        self.children = children
        self.approval = approval

    def merge(self, other: Suspend) -> Suspend:
        untils = [t for t in (self.until_ms, other.until_ms) if t is not None]
        return Suspend(min(untils) if untils else None, self.children or other.children, self.approval or other.approval)


class TaskFailure(Exception):
    """A task failed the execution."""

    def __init__(self, key: str, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.key = key
        self.error = error


@dataclasses.dataclass
class Scope:
    """What templates see: `inputs`, `outputs` (task name -> outputs), `execution`, and in a
    loop `item` and `index`. A loop iteration gets a child scope whose outputs start as a copy."""

    data: dict[str, Any]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.data["outputs"]

    def child(self, **extra: Any) -> Scope:
        return Scope({**self.data, "outputs": dict(self.outputs), **extra})


@dataclasses.dataclass
class Execution:
    """One turn of one execution: what its tasks read and write."""

    job: QueuedJob
    flow: Flow
    identity: str  # who the execution acts as
    role: str  # the role it holds in its workspace
    root: str
    steps: dict[str, str]  # its checkpoints: name -> JSON text
    sink: LogSink
    secrets: set[str]  # the secret values it was given: masked in what it stores
    order: dict[str, int]  # task name -> its place in document order
    live: dict[str, TaskRecord]  # tasks running now, by key (shown by the executions API)
    awaiting: list[str] = dataclasses.field(default_factory=list)  # approvals found pending this turn

    def step(self, name: str) -> Any:
        text = self.steps.get(name)
        return None if text is None else msgspec.json.decode(text)

    def log(self, task: str, message: str) -> None:
        self.sink.line(time.time(), "stdout", f"[{task}] {message}")


Lookup = Callable[[str, tuple[str, ...]], Awaitable[Any]]
TaskBody = Callable[[Execution, Task, Scope, str], Awaitable[Any]]


class FlowRunner:
    """Carries out turns of flow executions (registered with the executor for kind `flow`)."""

    def __init__(self, db: Database, masks: Masks, templates: Templates) -> None:
        self.db = db
        self.masks = masks
        self.templates = templates
        self.live: dict[str, dict[str, TaskRecord]] = {}  # execution id -> its running tasks
        self._flows: dict[str, Flow] = {}  # by version hash: parsed once
        # Set by whoever builds the runner (app/services/executions.py): the parts of the
        # server a turn needs, kept out of the constructor so that the flow package imports no service.
        self.version_of: Callable[[str, str], Awaitable[Any]]  # .yaml of a flow version
        self.identity_of: Callable[[QueuedJob], Awaitable[tuple[str, str, str, dict[str, Any]]]]
        self.lookup_for: Callable[[Execution], Lookup]
        self.plugin_body: TaskBody
        self.control: dict[str, TaskBody] = {}

    # -- a turn ------------------------------------------------------------------------------------

    async def run(self, job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
        """One turn of execution `job`: its final outcome, or WAITING."""
        try:
            identity, role, root, row = await self.identity_of(job)
        except TaskFailure as failure:
            return Outcome("FAILED", error=failure.error)
        flow = await self._flow(job.workspace, row["script_hash"])
        # Read on every turn, the first included: a replay starts with the steps it reuses.
        steps = {r["name"]: r["result"] for r in await self._steps(job.id)}
        secrets = self.masks.of(job.id)
        live: dict[str, TaskRecord] = {}
        execution = Execution(job, flow, identity, role, root, steps, sink, secrets,
                              {task.name: n for n, task in enumerate(flow.walk())}, live)
        inputs = msgspec.json.decode(row["args"]) if row["args"] else {}
        scope = Scope({"inputs": inputs, "outputs": {}, "execution": {
            "id": job.id, "flowId": row.get("flow_id"), "namespace": flow.namespace, "name": flow.name,
            "createdAt": row["created_at"], "trigger": row["trigger_kind"], "error": None,
        }, "trigger": msgspec.json.decode(row["event"]) if row.get("event") else None})
        deadline = None if flow.timeout_s is None else row["created_at"] + int(flow.timeout_s * 1000)
        self.live[job.id] = live
        walk = asyncio.ensure_future(self._turn(execution, scope, deadline))
        cancel.on_cancel(walk.cancel)
        try:
            return await walk
        except asyncio.CancelledError:
            if not cancel.is_set():
                raise
            return Outcome("CANCELLED", error={"name": "Cancelled", "message": "cancelled while running"})
        finally:
            self.live.pop(job.id, None)

    async def _turn(self, ex: Execution, scope: Scope, deadline: int | None) -> Outcome:
        failure = ex.step(records.FLOW_FAILED)
        if failure is None:
            try:
                if deadline is not None:
                    remaining = (deadline - now_ms()) / 1000
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await asyncio.wait_for(self.run_tasks(ex, ex.flow.tasks, scope, ""), remaining)
                else:
                    await self.run_tasks(ex, ex.flow.tasks, scope, "")
            except Suspend as wait:
                return self._waiting(ex, wait, deadline)
            except TaskFailure as error:
                failure = {**error.error, "task": error.key}
            except asyncio.TimeoutError:
                failure = {"name": "Timeout", "message": f"the flow took longer than its timeout of {ex.flow.timeout_s:g} s",
                           "timedOut": True}
            if failure is not None:
                await self._write(queue.checkpoint(ex.job.id, records.FLOW_FAILED, msgspec.json.encode(failure).decode(),
                                                   now_ms()))
        if failure is not None:
            scope.data["execution"] = {**scope.data["execution"], "error": failure}
            try:
                await self.run_tasks(ex, ex.flow.errors, scope, records.ERRORS_PREFIX)
            except Suspend as wait:
                return self._waiting(ex, wait, None)
            except TaskFailure as error:
                ex.sink.note(f"the errors task {error.key} failed too: {error.error.get('message', '')}")
        try:
            await self.run_tasks(ex, ex.flow.finally_, scope, records.FINALLY_PREFIX)
        except Suspend as wait:
            return self._waiting(ex, wait, None)
        except TaskFailure as error:
            failure = failure or {**error.error, "task": error.key}
        if failure is not None:
            status = "TIMED_OUT" if failure.pop("timedOut", False) else "FAILED"
            return Outcome(status, error=failure)
        try:
            outputs = await self.render(ex, ex.flow.outputs, scope)
        except TemplateError as error:
            return Outcome("FAILED", error={"name": "OutputError", "message": error.message})
        return Outcome("SUCCESS", result=self._json(ex, outputs))

    def _waiting(self, ex: Execution, wait: Suspend, deadline: int | None) -> Outcome:
        until = wait.until_ms
        if deadline is not None:
            until = deadline if until is None else min(until, deadline)
        # An approval decided after this turn found it pending wakes nothing (the run is RUNNING
        # then): the commit that makes it WAITING looks again.
        wakes = (queue.wake_if_decided(ex.job.id, tuple(ex.awaiting), now_ms()),) if ex.awaiting else ()
        return Outcome("WAITING", wait=Wait(until_ms=until, children="all" if wait.children else None,
                                            approval=ex.job.id if wait.approval else None), wakes=wakes)

    # -- tasks -------------------------------------------------------------------------------------

    async def run_tasks(self, ex: Execution, tasks: tuple[Task, ...], scope: Scope, prefix: str) -> None:
        """Run `tasks` one after the other (a checkpointed one is skipped, its outputs restored)."""
        for task in tasks:
            if not task.disabled:
                await self.run_task(ex, task, scope, prefix)

    async def run_task(self, ex: Execution, task: Task, scope: Scope, prefix: str) -> None:
        """Run one task to its end and checkpoint it; TaskFailure when it fails the execution,
        Suspend when it waits."""
        key = prefix + task.name
        done = ex.steps.get(records.DONE + key)
        if done is not None:
            scope.outputs[task.name] = records.decode(done).outputs
            return
        record = TaskRecord(task.name, task.type, "RUNNING", key, ex.order.get(task.name, 0), started_at=now_ms())
        if task.run_if is not None:
            try:
                run = await self.templates.condition(task.run_if, scope.data, self.lookup_for(ex))
            except TemplateError as error:
                failed = await self._failed(ex, task, record, {"name": "TemplateError", "message": error.message})
                if failed is not None:
                    raise failed from None
                return
            if not run:
                record.status, record.finished_at = "SKIPPED", record.started_at
                await self._done(ex, record)
                return
        ex.live[key] = record
        body = self.control.get(task.type, self.plugin_body)
        error: dict[str, Any] | None = None
        try:
            outputs = await body(ex, task, scope, key)
        except Suspend:
            record.status = "WAITING"
            raise
        except TaskFailure as failure:
            if failure.key != key and not task.allow_failure:
                ex.live.pop(key, None)
                raise  # a task inside this one failed the execution: recorded there
            error = failure.error
        except TemplateError as failure:
            error = {"name": "TemplateError", "message": failure.message}
        finally:
            if record.status != "WAITING":
                ex.live.pop(key, None)
        if error is not None:
            failed = await self._failed(ex, task, record, error)
            if failed is not None:
                raise failed
            scope.outputs[task.name] = None
            return
        record.status, record.outputs, record.finished_at = "SUCCESS", outputs, now_ms()
        record.attempts = max(record.attempts, 1)
        scope.outputs[task.name] = outputs
        await self._done(ex, record)

    async def _failed(self, ex: Execution, task: Task, record: TaskRecord, error: dict[str, Any]) -> TaskFailure | None:
        """Record a failed task: done with allowFailure (None), else the execution's failure,
        returned for the caller to raise."""
        record.status, record.error, record.finished_at = "FAILED", error, now_ms()
        record.attempts = max(record.attempts, 1)
        ex.log(task.name, f"failed: {error.get('name', 'Error')}: {error.get('message', '')}")
        if task.allow_failure:
            await self._done(ex, record)
            return None
        await self._write(queue.checkpoint(ex.job.id, records.FAILED + record.key, self._record_json(ex, record),
                                           record.finished_at or now_ms()))
        return TaskFailure(record.key, error)

    async def _done(self, ex: Execution, record: TaskRecord) -> None:
        text = self._record_json(ex, record)
        ex.steps[records.DONE + record.key] = text
        await self._write(queue.checkpoint(ex.job.id, records.DONE + record.key, text, record.finished_at or now_ms()))

    # -- helpers for task bodies -------------------------------------------------------------------

    async def render(self, ex: Execution, value: Any, scope: Scope) -> Any:
        """`value` with its templates rendered; the credentials it used are masked from now on."""
        rendered = await self.templates.render(value, scope.data, self.lookup_for(ex))
        for secret in rendered.secrets:
            self.masks.learn(ex.job.id, secret)
        return rendered.value

    async def checkpoint(self, ex: Execution, name: str, value: Any) -> None:
        """Store what a waiting task started (`sleep:`, `approval:`, `subflow:`) before it waits."""
        text = msgspec.json.encode(value).decode()
        ex.steps[name] = text
        await self._write(queue.checkpoint(ex.job.id, name, text, now_ms()))

    async def _write(self, statement: queue.Statement) -> None:
        # Survives the process dying; the execution's final status takes it to the disk.
        await self.db.write(statement, durable=False)

    def _record_json(self, ex: Execution, record: TaskRecord) -> str:
        text = records.encode(record)
        return hide_json(text, ex.secrets) if ex.secrets else text

    def _json(self, ex: Execution, value: Any) -> str:
        text = msgspec.json.encode(value).decode()
        return hide_json(text, ex.secrets) if ex.secrets else text

    async def _flow(self, workspace: str, digest: str) -> Flow:
        flow = self._flows.get(digest)
        if flow is None:
            if len(self._flows) > 1024:
                self._flows.clear()
            version = await self.version_of(workspace, digest)
            flow = self._flows[digest] = load(version.yaml)
        return flow

    async def _steps(self, job_id: str) -> list[Any]:
        return await self.db.fetch("SELECT name, result FROM job_step WHERE job_id = $1 ORDER BY seq", job_id)
