"""Flow executions: started, watched, cancelled, retried and replayed.

An execution is a run of kind `flow` (`app/engine/queue.py`) whose path is the flow's
`f/<namespace>/<name>` and whose `script_hash` names the flow version it runs: a flow changed
while an execution waits does not change what that execution runs. Its inputs are checked
against the flow's before the run exists (400 naming each bad field); inputs of type `secret`
are stored sealed with the master key and masked wherever the execution writes them. The
runner (`app/flows/runner.py`) does the work; this service gives it what it needs of the server
and shows executions in the workflowdev API's shape (DESIGN §4.1).

Retry (`POST /executions/{id}/retry`) runs a FAILED, TIMED_OUT or CANCELLED execution again
under the same id: tasks that succeeded keep their outputs and are not run again; the failed
task and those after it run, then `errors`/`finally` as they fall. Replay (`POST
/executions/{id}/replay {fromTask}`) makes a new execution of the same flow version with the
same inputs that reuses the outputs of every task before `fromTask` (in document order) and
runs the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import msgspec

from app.engine import queue
from app.engine.executor import Executor, Outcome, QueuedJob, now_ms
from app.engine.queue import NewRun, Policy
from app.errors import BadRequest, Conflict, NotFound
from app.flows import records
from app.flows.control import Control
from app.flows.inputs import check_inputs, from_text, secret_inputs
from app.flows.model import Flow, load
from app.flows.runner import Execution, FlowRunner, TaskFailure
from app.flows.tasks import PluginTasks, TaskServices
from app.flows.templating import Templates
from app.ids import random_uuid
from app.plugins.registry import Registry, TaskFailed
from app.security.vault import Vault
from app.services import audit
from app.services.actor import Actor, lowest
from app.services.credentials import Credentials
from app.services.flow_approvals import FlowApprovals
from app.services.flows import FlowRecord, Flows, FlowVersion
from app.services.jobs import Jobs, Trigger, job_view, run_cursor
from app.services.kv import KeyValueStore
from app.services.variables import Variables
from app.store.base import Database, Statement

SEALED = "$sealed"  # a secret input as stored: {"$sealed": "<hex of its ciphertext>"}
MAX_PAGE = 200


@dataclasses.dataclass(frozen=True)
class Started:
    execution_id: str
    status: str
    tasks_total: int


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def tasks_total(flow: Flow) -> int:
    return sum(1 for task in flow.walk() if not task.disabled)


class Executions:
    """Starts flow executions and answers for them; owns the flow runner."""

    def __init__(self, db: Database, jobs: Jobs, flows: Flows, registry: Registry, vault: Vault, kv: KeyValueStore,
                 variables: Variables, credentials: Credentials, approvals: FlowApprovals) -> None:
        self.db = db
        self.jobs = jobs
        self.flows = flows
        self.registry = registry
        self.vault = vault
        self.kv = kv
        self.variables = variables
        self.credentials = credentials
        self.approvals = approvals
        self.executor: Executor = jobs.executor
        self.runner = FlowRunner(db, self.executor.masks, Templates())
        self.runner.version_of = flows.version_by_hash
        self.runner.identity_of = self._identity
        self.runner.lookup_for = self._lookup
        services = TaskServices()
        services.storage_root = jobs.settings.home / "storage" / "executions"
        services.kv_get, services.kv_set, services.kv_delete = self._kv_get, self._kv_set, self._kv_delete
        services.credential, services.run_python, services.run_script = self._credential, self._run_python, self._run_script
        self.runner.plugin_body = PluginTasks(self.runner, registry, services)
        self.runner.control = Control(self.runner, self._start_subflow, self._state, approvals.open, approvals.state,
                                      approvals.close).types()
        self.executor.register("flow", self.runner.run)
        self._parsed: dict[str, Flow] = {}

    # -- starting ------------------------------------------------------------------------------------

    def _flow(self, version: FlowRecord | FlowVersion) -> Flow:
        flow = self._parsed.get(version.hash)
        if flow is None:
            if len(self._parsed) > 1024:
                self._parsed.clear()
            flow = self._parsed[version.hash] = load(version.yaml)
        return flow

    async def start(self, actor: Actor, path: str, inputs: Any, trigger: Trigger, parent: str | None = None,
                    root: str | None = None, claimed: bool = False, event: Any = None, at_ms: int | None = None,
                    job_id: str | None = None, text: Collection[str] = ()) -> Started:
        """Queue an execution of the flow at `path` (`f/<namespace>/<name>`) with `inputs`,
        checked first (BadRequest, no execution, when they do not fit); committed on return.
        `event`: what a route or webhook received (`trigger` in templates); its inputs are the
        keys of the request the flow declares, the others are left in the event."""
        run, flow = await self.new_run(actor, path, inputs, trigger, parent, root, claimed, event, at_ms, job_id, text)
        results = await self.db.write(queue.insert(run), *queue.announce(self.db.dialect))
        if not results[0].rowcount:  # a schedule's tick fired already (by another process)
            return Started(run.id, "QUEUED", tasks_total(flow))
        self.jobs.started[trigger.kind] += 1
        self.executor.submit(self.queued(run, claimed))
        return Started(run.id, "RUNNING" if claimed else "QUEUED", tasks_total(flow))

    @staticmethod
    def queued(run: NewRun, claimed: bool = False) -> QueuedJob:
        """What the executor is handed of an execution once its INSERT is committed."""
        return QueuedJob.new(run.id, run.workspace, "flow", run.path, run.policy, run.parent, run.scheduled_for,
                             claimed=claimed)

    async def new_run(self, actor: Actor, path: str, inputs: Any, trigger: Trigger, parent: str | None = None,
                      root: str | None = None, claimed: bool = False, event: Any = None, at_ms: int | None = None,
                      job_id: str | None = None, text: Collection[str] = ()) -> tuple[NewRun, Flow]:
        """The run of an execution of the flow at `path`, its inputs checked (see `start`), to
        insert (`queue.insert`) with whatever goes with it (a workflow's turn end), and its flow."""
        version = await self.flows.by_path(actor.workspace, path)
        flow = self._flow(version)
        if not isinstance(inputs, dict):
            raise BadRequest("a flow's inputs are a JSON object")
        if event is not None:
            declared = {item.name for item in flow.inputs}
            inputs = {name: value for name, value in inputs.items() if name in declared}
        if text:
            inputs = from_text(flow, inputs, text)
        checked = check_inputs(flow, inputs)
        job_id = job_id or random_uuid()
        args = msgspec.json.encode(self._seal(actor.workspace, job_id, flow, checked)).decode()
        now = now_ms()
        at = at_ms or now
        policy = Policy(concurrency_key=f"flow:{actor.workspace}:{path}" if flow.concurrency_limit else None,
                        concurrency_limit=flow.concurrency_limit)
        run = NewRun(
            id=job_id, workspace=actor.workspace, kind="flow", path=f"f/{flow.namespace}/{flow.name}", args=args,
            status="RUNNING" if claimed else "QUEUED", trigger_kind=trigger.kind, trigger_detail=trigger.detail,
            created_by=actor.username or "", created_at=now, scheduled_for=at, policy=policy,
            script_hash=version.hash, request_id=actor.request_id, parent=parent, root=root,
            event=None if event is None else msgspec.json.encode(event).decode(),
            role_cap=actor.run_cap, worker=self.executor.worker_id,
        )
        return run, flow

    async def is_flow(self, workspace: str, path: str) -> bool:
        """Whether `path` names a flow of the workspace (`f/<namespace>/<name>`)."""
        try:
            await self.flows.by_path(workspace, path)
        except NotFound:
            return False
        return True

    async def check_start(self, workspace: str, path: str, inputs: Any) -> None:
        """That the flow at `path` exists (NotFound) and, when `inputs` are given (a schedule's),
        that they fit it (BadRequest naming each bad one)."""
        flow = self._flow(await self.flows.by_path(workspace, path))
        if inputs is not None:
            check_inputs(flow, inputs)

    async def run_and_wait(self, actor: Actor, path: str, inputs: Any, trigger: Trigger,
                           event: Any = None, text: Collection[str] = ()) -> tuple[str, Outcome]:
        """Start an execution and wait for its end (a synchronous route): its id and outcome."""
        job_id = (await self.start(actor, path, inputs, trigger, event=event, text=text)).execution_id
        job = await self.jobs.wait(actor.workspace, job_id)
        return job_id, Outcome(job["status"], msgspec.json.encode(job["result"]).decode(), job["error"])

    def _seal(self, workspace: str, job_id: str, flow: Flow, inputs: dict[str, Any]) -> dict[str, Any]:
        secret = secret_inputs(flow)
        if not secret:
            return inputs
        return {name: {SEALED: self.vault.encrypt(str(value).encode(), f"exec:{workspace}:{job_id}:{name}").hex()}
                if name in secret and value is not None else value for name, value in inputs.items()}

    def _unseal(self, workspace: str, job_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        opened = {}
        for name, value in inputs.items():
            if isinstance(value, dict) and set(value) == {SEALED}:
                value = self.vault.decrypt(bytes.fromhex(value[SEALED]), f"exec:{workspace}:{job_id}:{name}").decode()
                self.executor.masks.learn(job_id, value)
            opened[name] = value
        return opened

    # -- what a turn needs ----------------------------------------------------------------------------

    async def _identity(self, job: QueuedJob) -> tuple[str, str, str, dict[str, Any]]:
        row = await self.db.fetchrow(
            "SELECT j.args, j.event, j.script_hash, j.created_by, j.created_at, j.trigger_kind, j.root_job, j.role_cap, "
            "(SELECT v.created_by FROM flow_version v JOIN flow f ON f.id = v.flow_id WHERE v.hash = j.script_hash "
            "AND f.workspace_id = j.workspace_id ORDER BY v.revision DESC LIMIT 1) AS author FROM job j WHERE j.id = $1",
            job.id)
        if row is None:
            raise RuntimeError(f"execution {job.id} is gone")
        identity = row["created_by"]
        role = await self.jobs.role_of(identity, job.workspace)
        if role is None:
            raise _NotAMember(f"this execution acts as {identity or 'nobody'}, who is not a member of {job.workspace}")
        if row["author"] and row["author"] != identity:
            role = lowest(role, await self.jobs.role_of(row["author"], job.workspace) or "viewer")
        if row["role_cap"]:
            role = lowest(role, row["role_cap"])
        inputs = self._unseal(job.workspace, job.id, _decode(row["args"]) or {})
        view = {**dict(row), "args": msgspec.json.encode(inputs).decode()}
        return identity, role, row["root_job"] or job.id, view

    def _lookup(self, ex: Execution):  # type: ignore[no-untyped-def]
        actor = Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id)

        async def lookup(kind: str, args: tuple[str, ...]) -> Any:
            if kind == "kv":
                return await self._kv_get(ex, *args)
            if kind == "vars":
                return await self.variables.value(actor, args[0])
            if kind == "cred":
                return await self.credentials.reveal(actor, args[0])
            raise BadRequest(f"no lookup {kind}")
        return lookup

    async def _kv_get(self, ex: Execution, namespace: str, key: str) -> Any:
        try:
            text, _ = await self.kv.get(ex.job.workspace, namespace, key)
        except NotFound:
            return None
        return msgspec.json.decode(text)

    async def _kv_set(self, ex: Execution, namespace: str, key: str, value: Any) -> None:
        actor = Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id, action="kv.put")
        await self.kv.put(actor, namespace, key, msgspec.json.encode(value).decode())

    async def _kv_delete(self, ex: Execution, namespace: str, key: str) -> bool:
        actor = Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id, action="kv.delete")
        try:
            await self.kv.delete(actor, namespace, key)
        except NotFound:
            return False
        return True

    async def _credential(self, ex: Execution, name: str) -> str:
        return await self.credentials.reveal(Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id), name)

    async def _run_python(self, ex: Execution, task: str, code: str | None, path: str | None, args: dict[str, Any],
                          timeout_s: float | None) -> Any:
        if code is None:
            if not path:
                raise TaskFailed("InvalidProperty", "script.python takes code or path")
            version = await self.jobs.scripts.for_run(ex.job.workspace, path)
            code, label = version["content"], version["path"]
        else:
            label = f"{ex.flow.namespace}/{ex.flow.name}/{task}"

        def line(ts: float, stream: str, text: str) -> None:
            ex.sink.line(ts, stream, f"[{task}] {text}")

        outcome = await self.jobs.run_code(ex.job.id, ex.job.workspace, label, ex.identity, ex.role, code, args,
                                           timeout_s, line, root_job=ex.root)
        if outcome.status != "SUCCESS":
            error = outcome.error or {}
            raise TaskFailed(error.get("name") or outcome.status, error.get("message") or outcome.status)
        return _decode(outcome.result)

    async def _run_script(self, ex: Execution, path: str, args: dict[str, Any], wait: bool) -> dict[str, Any]:
        actor = Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id, run_cap=ex.role)
        trigger = Trigger("flow", ex.job.id)
        if not wait:
            job_id = await self.jobs.enqueue(actor, args, trigger, path=path, parent=ex.job.id, root=ex.root, refs=False)
            return {"jobId": job_id, "status": "QUEUED", "result": None}
        job_id, outcome = await self.jobs.run_and_wait(actor, args, trigger, path=path, parent=ex.job.id)
        if outcome.status != "SUCCESS":
            message = (outcome.error or {}).get("message", outcome.status)
            raise TaskFailed("ScriptFailed", f"run {job_id} of {path} ended {outcome.status}: {message}")
        return {"jobId": job_id, "status": outcome.status, "result": _decode(outcome.result)}

    async def _start_subflow(self, ex: Execution, namespace: str, name: str, inputs: dict[str, Any], wait: bool) -> str:
        actor = Actor(ex.identity, ex.job.workspace, ex.role, run_id=ex.job.id, run_cap=ex.role)
        started = await self.start(actor, f"f/{namespace}/{name}", inputs, Trigger("flow", ex.job.id),
                                   parent=ex.job.id if wait else None, root=ex.root if wait else None)
        return started.execution_id

    async def _state(self, job_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT status, result, error FROM job WHERE id = $1", job_id)
        if row is None:
            return None
        return {"status": row["status"], "result": _decode(row["result"]), "error": _decode(row["error"])}

    # -- reading ----------------------------------------------------------------------------------------

    async def get(self, workspace: str, execution_id: str) -> dict[str, Any]:
        """An execution and its tasks (DESIGN §4.1's shape, snake_case)."""
        job = await self.jobs.get(workspace, execution_id)
        if job["kind"] != "flow":
            raise NotFound(f"no execution {execution_id}")
        steps = {row["name"]: row["result"] for row in await self.jobs.runs.steps(execution_id)}
        tasks = records.records(steps)
        known = {record.key for record in tasks}
        tasks += [record for key, record in self.runner.live.get(execution_id, {}).items() if key not in known]
        flow = await self._flow_of(workspace, job)
        return {"execution": self._summary(job, flow, sum(1 for r in tasks if r.status not in ("RUNNING", "WAITING"))),
                "tasks": tasks}

    async def _flow_of(self, workspace: str, job: dict[str, Any]) -> dict[str, Any] | None:
        try:
            version = await self.flows.version_by_hash(workspace, job["script_hash"])
        except NotFound:
            return None
        return {"flow_id": version.flow_id, "revision": version.revision, "flow": self._flow(version)}

    def _summary(self, job: dict[str, Any], flow: dict[str, Any] | None, executed: int) -> dict[str, Any]:
        inputs = job["args"] or {}
        inputs = {k: "***" if isinstance(v, dict) and set(v) == {SEALED} else v for k, v in inputs.items()}
        return {
            "id": job["id"], "flow_id": flow["flow_id"] if flow else None, "path": job["path"],
            "namespace": flow["flow"].namespace if flow else None, "flow_name": flow["flow"].name if flow else None,
            "revision": flow["revision"] if flow else None, "status": job["status"],
            "tasks_total": tasks_total(flow["flow"]) if flow else 0, "tasks_executed": executed,
            "inputs": inputs, "outputs": job["result"], "error": job["error"], "trigger": job["trigger"],
            "parent_id": job["parent_job"], "created_by": job["created_by"], "created_at": job["created_at"],
            "started_at": job["started_at"], "finished_at": job["finished_at"], "duration_ms": job["duration_ms"],
            "waiting_for": job["waiting_for"], "wake_at": job["wake_at"],
        }

    async def list(self, workspace: str, flow_id: str | None = None, namespace: str | None = None,
                   status: str | None = None, since: int | None = None, labels: list[str] | None = None,
                   cursor: str | None = None, limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
        """Executions newest first, filtered; the cursor is `<created_at>:<id>` of the last one."""
        paths: list[str] | None = None
        if flow_id is not None:
            flow = await self.flows.get(workspace, flow_id)
            paths = [f"f/{flow.namespace}/{flow.name}"]
        if labels:
            wanted = dict(label.partition("=")[::2] for label in labels)
            chosen = [f.path for f in await self._all_flows(workspace, labels[0])
                      if all(f.labels.get(k) == v for k, v in wanted.items())]
            paths = chosen if paths is None else [p for p in paths if p in chosen]
        if status is not None and status not in queue.STATUSES:
            raise BadRequest(f"status must be one of {', '.join(queue.STATUSES)}")
        before = run_cursor(cursor)
        limit = max(1, min(limit, MAX_PAGE))
        if paths == []:
            return [], None
        rows = await self.jobs.runs.flow_page(workspace, paths, namespace, status, since, before, limit + 1)
        items = []
        for row in rows[:limit]:
            job = job_view(row)
            items.append(self._summary(job, await self._flow_of(workspace, job), 0))
        next_cursor = f"{rows[limit - 1]['created_at']}:{rows[limit - 1]['id']}" if len(rows) > limit else None
        return items, next_cursor

    async def _all_flows(self, workspace: str, label: str) -> list[FlowRecord]:
        found: list[FlowRecord] = []
        cursor = None
        while True:
            page = await self.flows.list(workspace, label=label, cursor=cursor, limit=200)
            found += page.items
            if page.next_cursor is None or len(found) > 10_000:
                return found
            cursor = page.next_cursor

    # -- acting on one --------------------------------------------------------------------------------

    async def cancel(self, actor: Actor, execution_id: str) -> dict[str, Any]:
        await self.get(actor.workspace, execution_id)
        await self.jobs.cancel(actor, execution_id)
        return await self.get(actor.workspace, execution_id)

    async def retry(self, actor: Actor, execution_id: str) -> dict[str, Any]:
        """Run a FAILED, TIMED_OUT or CANCELLED execution again from its failed task (same id)."""
        job = await self.jobs.get(actor.workspace, execution_id)
        if job["kind"] != "flow":
            raise NotFound(f"no execution {execution_id}")
        if job["status"] not in ("FAILED", "TIMED_OUT", "CANCELLED"):
            raise Conflict(f"the execution is {job['status']}: only a failed, timed-out or cancelled one is retried",
                           {"status": job["status"]})
        now = now_ms()
        results = await self.db.write(
            Statement("DELETE FROM job_step WHERE job_id = $1 AND (name LIKE 'fail:%' OR name = $2 OR name LIKE $3 "
                      "OR name LIKE $4)", (execution_id, records.FLOW_FAILED, records.DONE + records.ERRORS_PREFIX + "%",
                                           records.DONE + records.FINALLY_PREFIX + "%")),
            queue.reopen(execution_id, now),
            audit.entry(actor, f"execution:{execution_id}"),
            *queue.announce(self.db.dialect),
        )
        if not results[1].rowcount:
            raise Conflict("the execution changed meanwhile; read it again")
        await self.executor.submit_woken([execution_id])
        return await self.get(actor.workspace, execution_id)

    async def replay(self, actor: Actor, execution_id: str, from_task: str) -> Started:
        """A new execution of the same flow version and inputs that reuses the outputs of the
        tasks before `from_task` and runs the rest."""
        job = await self.jobs.get(actor.workspace, execution_id)
        if job["kind"] != "flow":
            raise NotFound(f"no execution {execution_id}")
        version = await self.flows.version_by_hash(actor.workspace, job["script_hash"])
        flow = self._flow(version)
        order = {task.name: n for n, task in enumerate(flow.walk())}
        if from_task not in order:
            raise BadRequest(f"the flow has no task {from_task!r}", {"errors": [{"path": "fromTask",
                                                                               "message": "no such task"}]})
        ancestors = _ancestors(flow, from_task)
        keep = {name for name, n in order.items() if n < order[from_task] and name not in ancestors}
        steps = await self.jobs.runs.steps(execution_id)
        reused = [(row["name"], row["result"]) for row in steps if row["name"].startswith(records.DONE)
                  and records.decode(row["result"]).task in keep]
        new_id = random_uuid()
        now = now_ms()
        run = NewRun(
            id=new_id, workspace=actor.workspace, kind="flow", path=job["path"],
            args=msgspec.json.encode(job["args"]).decode(), status="QUEUED", trigger_kind="replay",
            trigger_detail=execution_id, created_by=actor.username or "", created_at=now, scheduled_for=now,
            policy=Policy(concurrency_key=f"flow:{actor.workspace}:{job['path']}" if flow.concurrency_limit else None,
                          concurrency_limit=flow.concurrency_limit),
            script_hash=job["script_hash"], request_id=actor.request_id, role_cap=actor.run_cap,
        )
        if any(isinstance(v, dict) and set(v) == {SEALED} for v in (job["args"] or {}).values()):
            inputs = self._unseal(actor.workspace, execution_id, job["args"])
            run = dataclasses.replace(run, args=msgspec.json.encode(self._seal(actor.workspace, new_id, flow, inputs)).decode())
        await self.db.write(queue.insert(run), *[queue.checkpoint(new_id, name, text, now) for name, text in reused],
                            audit.entry(actor, f"execution:{new_id}", action="execution.replay"),
                            *queue.announce(self.db.dialect))
        self.executor.submit(QueuedJob.new(new_id, actor.workspace, "flow", job["path"], run.policy, None, now))
        # Its checkpoints are read on its first turn: it is a resumed run in all but name.
        return Started(new_id, "QUEUED", tasks_total(flow))


def _ancestors(flow: Flow, name: str) -> set[str]:
    """The control tasks that hold task `name`."""
    def search(tasks: Any, path: list[str]) -> list[str] | None:
        for task in tasks:
            if task.name == name:
                return path
            for children in task.children.values():
                found = search(children, [*path, task.name])
                if found is not None:
                    return found
        return None
    for tasks in (flow.tasks, flow.errors, flow.finally_):
        found = search(tasks, [])
        if found is not None:
            return set(found)
    return set()


class _NotAMember(TaskFailure):
    def __init__(self, message: str) -> None:
        super().__init__("", {"name": "NotAMember", "message": message})

