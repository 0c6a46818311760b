"""Workflow instances (DESIGN §4.4): the runs of a workflow, by the workflow's name.

An instance is a run of kind `workflow` whose id is the instance's (given, or made), of the
script whose `main` is that workflow. Its status is the run's, in this API's words:

| run | instance |
|---|---|
| QUEUED | queued |
| RUNNING | running, or waitingForPause once a pause is asked for (it stops at its next step) |
| WAITING | waiting (a sleep, an event, an approval, its tasks) |
| PAUSED | paused |
| SUCCESS | complete |
| FAILED, TIMED_OUT | errored |
| CANCELLED | terminated |

and `unknown` for a RUNNING instance whose process stopped answering (PostgreSQL: its worker's
heartbeat is older than three heartbeats) until it answers again or another process recovers it.

A restart runs the instance again from the start under the same id with the next `runNumber`:
the steps of the runs before are kept, renamed `run:<n>/<step>`, with their logs (told apart by
when each run started, the `restart:<n>` records). Events sent to an instance are stored with
it whatever it is doing and taken by `wait_for_event` in order (`Jobs.send_event`).

Every route passes the API's one role check (viewer); creating, managing (pause, resume,
restart, terminate), sending events and ticking each pass a `Policy` hook as well: by default
executor creates and sends events, editor manages, admin ticks.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgspec

from app.engine import queue
from app.engine.executor import QueuedJob, now_ms
from app.engine.workers import HEARTBEAT_S
from app.errors import BadRequest, Conflict, Forbidden, NotFound
from app.ids import random_uuid
from app.runtimes.python import records
from app.services import audit
from app.services.actor import Actor, at_least
from app.services.instance import InstanceSettings
from app.services.jobs import Jobs, Trigger
from app.store.base import Database, Row, Statement

INSTANCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_BATCH = 100
RUNNER_TICK = "workflows.runner_tick"
# A RUNNING instance whose process has not heartbeat for this long is `unknown`: its process may
# be stalled or gone (three heartbeats: one late under load is not enough); another recovers it once
# it has been silent for DEAD_AFTER_S.
SILENT_AFTER_S = 3 * HEARTBEAT_S
_STATUS = {"QUEUED": "queued", "RUNNING": "running", "WAITING": "waiting", "PAUSED": "paused", "SUCCESS": "complete",
           "FAILED": "errored", "TIMED_OUT": "errored", "CANCELLED": "terminated"}
STATUSES = ("queued", "running", "paused", "errored", "terminated", "complete", "waiting", "waitingForPause", "unknown")
_RUN_STATUSES = {"queued": ("QUEUED",), "running": ("RUNNING",), "paused": ("PAUSED",), "errored": ("FAILED", "TIMED_OUT"),
                 "terminated": ("CANCELLED",), "complete": ("SUCCESS",), "waiting": ("WAITING",),
                 "waitingForPause": ("RUNNING",), "unknown": ("RUNNING",)}
_COLUMNS = ("j.id, j.path, j.args, j.status, j.result, j.error, j.created_by, j.created_at, j.started_at, "
            "j.finished_at, j.wake_at, j.waiting_for, j.pause_requested, j.worker, j.attempt")


class Policy:
    """Who may do what to a workflow's instances, beyond reading them (a hook: replace a
    method to decide otherwise, e.g. per workflow name)."""

    def create(self, actor: Actor, name: str) -> None:
        self._need(actor, "executor", "create instances")

    def manage(self, actor: Actor, name: str, action: str) -> None:
        self._need(actor, "editor", f"{action} instances")

    def send_event(self, actor: Actor, name: str) -> None:
        self._need(actor, "executor", "send events to instances")

    def tick(self, actor: Actor) -> None:
        if not actor.superadmin and not at_least(actor.role, "admin"):
            raise Forbidden("the runner tick needs the admin role")

    @staticmethod
    def _need(actor: Actor, role: str, what: str) -> None:
        if not at_least(actor.role, role):
            raise Forbidden(f"to {what} needs the {role} role")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    seq: int
    status: str  # complete, errored
    output: Any
    error: dict[str, Any] | None
    at: int


@dataclasses.dataclass(frozen=True)
class Instance:
    id: str
    name: str
    status: str
    run_number: int
    params: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    created_by: str
    created_at: int
    started_at: int | None
    ended_at: int | None
    wake_at: int | None
    awaiting_event: str | None
    awaiting_approval: str | None
    current_step: dict[str, Any] | None  # {name, attempts, nextRetryAt}: the step it is at


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def is_step(name: str) -> bool:
    """Whether a run's checkpoint is one of its steps (not a record kept beside them, nor a step
    of an earlier run, set aside by a restart)."""
    return records.is_step(name) and not name.startswith(("restart:", "run:"))


class Instances:
    """The instances of a workspace's workflows."""

    def __init__(self, db: Database, jobs: Jobs, settings: InstanceSettings, policy: Policy | None = None) -> None:
        self.db = db
        self.jobs = jobs
        self.settings = settings
        self.policy = policy or Policy()

    # -- workflows ---------------------------------------------------------------------------------

    async def workflows(self, workspace: str) -> list[tuple[str, str]]:
        """(name, script path) of the workspace's workflows."""
        return await self.jobs.scripts.workflows(workspace)

    async def _version(self, workspace: str, name: str) -> dict[str, Any]:
        return await self.jobs.scripts.by_workflow(workspace, name)

    # -- instances ----------------------------------------------------------------------------------

    async def create(self, actor: Actor, name: str, instance_id: str | None, params: Any) -> Instance:
        """Start an instance (`instance_id` or a new one): 409 when the id is taken."""
        self.policy.create(actor, name)
        version = await self._version(actor.workspace, name)
        instance_id = self._check_id(instance_id) if instance_id is not None else random_uuid()
        await self.jobs.enqueue(actor, params if params is not None else {}, Trigger("workflow", name),
                                path=version["path"], refs=True, job_id=instance_id)
        return await self.get(actor.workspace, name, instance_id)

    async def batch(self, actor: Actor, name: str, items: list[dict[str, Any]]) -> list[Instance]:
        """Start up to 100 instances at once, each with its id: all or none (409 naming the
        ids taken, 400 naming bad ones)."""
        self.policy.create(actor, name)
        if not items or len(items) > MAX_BATCH:
            raise BadRequest(f"a batch holds 1 to {MAX_BATCH} instances")
        version = await self._version(actor.workspace, name)
        ids = [self._check_id(item.get("id")) for item in items]
        if len(set(ids)) != len(ids):
            raise BadRequest("a batch names each instance once")
        taken = await self._taken(ids)
        if taken:
            raise Conflict(f"instances {', '.join(sorted(taken))} exist already", {"ids": sorted(taken)})
        statements: list[Statement] = []
        now = now_ms()
        for instance_id, item in zip(ids, items):
            args_text, refs = await self.jobs.arguments_text(actor, version, item.get("params") or {})
            statements.append(self.jobs.insert(actor, version, args_text, Trigger("workflow", name), "QUEUED",
                                               instance_id, None, None, now, refs=refs))
        results = await self.db.write(*statements, *queue.announce(self.db.dialect))
        if not all(result.rowcount for result in results[:len(ids)]):
            raise Conflict("some of these instances were created meanwhile")
        for instance_id in ids:
            self.jobs.submit(instance_id, actor.workspace, version, now)
        self.jobs.started["workflow"] += len(ids)
        return [await self.get(actor.workspace, name, instance_id) for instance_id in ids]

    async def _taken(self, ids: list[str]) -> set[str]:
        marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
        return {row["id"] for row in await self.db.fetch(f"SELECT id FROM job WHERE id IN ({marks})", *ids)}

    @staticmethod
    def _check_id(value: Any) -> str:
        if not isinstance(value, str) or not INSTANCE_ID.fullmatch(value):
            raise BadRequest("an instance id is 1 to 64 letters, digits and _ . : -")
        return value

    async def _row(self, workspace: str, name: str, instance_id: str) -> Row:
        version = await self._version(workspace, name)
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM job j WHERE j.id = $1 AND j.workspace_id = $2 AND j.kind = 'workflow' AND j.path = $3",
            instance_id, workspace, version["path"])
        if row is None:
            raise NotFound(f"no instance {instance_id} of workflow {name}")
        return row

    async def get(self, workspace: str, name: str, instance_id: str) -> Instance:
        """An instance: its status, run number, params, output or error, and the step it is at."""
        row = await self._row(workspace, name, instance_id)
        steps = await self.db.fetch("SELECT name, seq, result, created_at FROM job_step WHERE job_id = $1 ORDER BY seq",
                                    instance_id)
        return await self._instance(name, row, steps)

    async def _instance(self, name: str, row: Row, steps: list[Row]) -> Instance:
        waiting = _decode(row["waiting_for"]) or {}
        runs = 1 + sum(1 for step in steps if step["name"].startswith("restart:"))
        current = None
        retries = [step for step in steps if step["name"].startswith("retry:")]
        if retries and row["status"] not in queue.FINAL:
            last = _decode(retries[-1]["result"]) or {}
            current = {"name": retries[-1]["name"][len("retry:"):], "attempts": last.get("attempt", 1),
                       "nextRetryAt": last.get("nextAt")}
        elif row["status"] not in queue.FINAL:
            taken = [step for step in steps if is_step(step["name"])]
            if taken:
                current = {"name": taken[-1]["name"], "attempts": 1, "nextRetryAt": None}
        return Instance(
            id=row["id"], name=name, status=await self._status(row), run_number=runs, params=_decode(row["args"]) or {},
            output=_decode(row["result"]), error=_decode(row["error"]), created_by=row["created_by"],
            created_at=row["created_at"], started_at=row["started_at"], ended_at=row["finished_at"],
            wake_at=row["wake_at"], awaiting_event=waiting.get("event"), awaiting_approval=waiting.get("approval"),
            current_step=current,
        )

    async def _status(self, row: Row) -> str:
        status = row["status"]
        if status == "RUNNING":
            if row["pause_requested"]:
                return "waitingForPause"
            if self.db.dialect == "postgres" and row["worker"]:
                beat = await self.db.fetchval("SELECT heartbeat_at FROM worker WHERE id = $1", row["worker"])
                if beat is None or beat < now_ms() - SILENT_AFTER_S * 1000:
                    return "unknown"
        return _STATUS.get(status, "unknown")

    async def list(self, workspace: str, name: str, status: str | None, page_size: int,
                   cursor: str | None) -> tuple[list[Instance], str | None]:
        """Newest first; the cursor (opaque) is the last one's (created_at, id): a page never
        repeats or skips an instance when others are created meanwhile (they come first)."""
        version = await self._version(workspace, name)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status is one of {', '.join(STATUSES)}")
        page_size = max(1, min(page_size, 100))
        clauses, args = ["j.workspace_id = $1", "j.kind = 'workflow'", "j.path = $2"], [workspace, version["path"]]
        if status is not None:
            marks = []
            for run_status in _RUN_STATUSES[status]:
                args.append(run_status)
                marks.append(f"${len(args)}")
            clauses.append(f"j.status IN ({', '.join(marks)})")
            if status == "waitingForPause":
                clauses.append("j.pause_requested = 1")
            elif status == "running":
                clauses.append("j.pause_requested = 0")
        before = self._cursor(cursor)
        if before is not None:
            args += list(before)
            n = len(args)
            clauses.append(f"(j.created_at < ${n - 1} OR (j.created_at = ${n - 1} AND j.id < ${n}))")
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM job j WHERE {' AND '.join(clauses)} ORDER BY j.created_at DESC, j.id DESC "
            f"LIMIT {page_size + 1}", *args)
        items = [await self._instance(name, row, []) for row in rows[:page_size]]
        next_cursor = None
        if len(rows) > page_size:
            last = rows[page_size - 1]
            next_cursor = msgspec.json.encode([last["created_at"], last["id"]]).hex()
        return items, next_cursor

    @staticmethod
    def _cursor(cursor: str | None) -> tuple[int, str] | None:
        if not cursor:
            return None
        try:
            created, last = msgspec.json.decode(bytes.fromhex(cursor))
            if isinstance(created, int) and isinstance(last, str):
                return created, last
        except (ValueError, msgspec.DecodeError, TypeError):
            pass
        raise BadRequest("cursor is not one this API gave")

    # -- history ------------------------------------------------------------------------------------

    async def history(self, workspace: str, name: str, instance_id: str, run_number: int | None, page_size: int,
                      steps_cursor: int, events_cursor: int, logs_cursor: int, include_logs: bool,
                      log_level: str | None, log_category: str | None, order: str) -> dict[str, Any]:
        """Steps, events and logs of one run of an instance (the latest by default), each a page
        with its own cursor."""
        row = await self._row(workspace, name, instance_id)
        if order not in ("asc", "desc"):
            raise BadRequest("order is asc or desc")
        page_size = max(1, min(page_size, 100))
        stored = await self.db.fetch("SELECT name, seq, result, created_at FROM job_step WHERE job_id = $1 ORDER BY seq",
                                     instance_id)
        restarts = sorted(_decode(s["result"])["at"] for s in stored if s["name"].startswith("restart:"))
        latest = len(restarts) + 1
        run = latest if run_number is None else run_number
        if not 1 <= run <= latest:
            raise NotFound(f"the instance has runs 1 to {latest}")
        prefix = "" if run == latest else f"run:{run}/"
        steps, events = [], []
        for step in stored:
            step_name = step["name"]
            if prefix:
                if not step_name.startswith(prefix):
                    continue
                step_name = step_name[len(prefix):]
            elif step_name.startswith("run:"):
                continue
            value = _decode(step["result"])
            if step_name.startswith("event:"):
                events.append({"seq": step["seq"], "type": step_name.split(":")[1], "payload": (value or {}).get("payload"),
                               "sentBy": (value or {}).get("sentBy"), "at": step["created_at"]})
            elif is_step(step_name):
                failed = isinstance(value, dict) and bool(value.get("__wmill_error") or value.get("__flowmill_error"))
                steps.append({"seq": step["seq"], "name": step_name, "status": "errored" if failed else "complete",
                              "output": None if failed else value, "error": value if failed else None,
                              "at": step["created_at"]})
        started = 0 if run == 1 else restarts[run - 2]
        ended = restarts[run - 1] if run < latest else None
        result: dict[str, Any] = {"instanceId": instance_id, "runNumber": run, "runs": latest,
                                  **_page(steps, "steps", steps_cursor, page_size, order),
                                  **_page(events, "events", events_cursor, page_size, order)}
        if include_logs:
            logs = await self._logs(instance_id, started, ended, log_level, log_category)
            result.update(_page(logs, "logs", logs_cursor, page_size, order))
        return result

    async def _logs(self, instance_id: str, since: int, until: int | None, level: str | None,
                    category: str | None) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, ts, stream, line FROM job_log WHERE job_id = $1 AND ts >= $2 ORDER BY id", instance_id, since)
        found = []
        for row in rows:
            if until is not None and row["ts"] >= until:
                break
            line_level = "error" if row["stream"] == "stderr" else "info"
            line_category = "system" if row["stream"] == "flowmill" else "user"
            if (level is None or level == line_level) and (category is None or category == line_category):
                found.append({"seq": row["id"], "ts": row["ts"], "level": line_level, "category": line_category,
                              "message": row["line"]})
        return found

    # -- acting on one -----------------------------------------------------------------------------------

    async def pause(self, actor: Actor, name: str, instance_id: str) -> Instance:
        """Pause: at once when queued or waiting; at its next step when running (waitingForPause)."""
        self.policy.manage(actor, name, "pause")
        row = await self._row(actor.workspace, name, instance_id)
        if row["status"] not in ("QUEUED", "WAITING", "RUNNING") or row["pause_requested"]:
            raise Conflict(f"a {await self._status(row)} instance cannot be paused", {"status": await self._status(row)})
        await self.jobs.pause(actor, instance_id)
        return await self.get(actor.workspace, name, instance_id)

    async def resume(self, actor: Actor, name: str, instance_id: str) -> Instance:
        """Resume a paused instance (or take back a pause not yet taken)."""
        self.policy.manage(actor, name, "resume")
        row = await self._row(actor.workspace, name, instance_id)
        if row["status"] == "RUNNING" and row["pause_requested"]:
            await self.db.write(queue.clear_pause(instance_id), audit.entry(actor, f"instance:{instance_id}"))
        elif row["status"] == "PAUSED":
            if not await self.jobs.executor.wake([queue.wake(instance_id, now_ms(), ("PAUSED",))], [instance_id]):
                raise Conflict("the instance changed meanwhile; read it again")
            await self.db.write(audit.entry(actor, f"instance:{instance_id}"))
        else:
            raise Conflict(f"a {await self._status(row)} instance cannot be resumed", {"status": await self._status(row)})
        return await self.get(actor.workspace, name, instance_id)

    async def terminate(self, actor: Actor, name: str, instance_id: str) -> Instance:
        """Stop an instance for good (terminated); 409 once it has ended."""
        self.policy.manage(actor, name, "terminate")
        row = await self._row(actor.workspace, name, instance_id)
        if row["status"] in queue.FINAL:
            raise Conflict(f"a {await self._status(row)} instance cannot be terminated", {"status": await self._status(row)})
        await self.jobs.cancel(actor, instance_id, f"terminated by {actor.username}")
        return await self.get(actor.workspace, name, instance_id)

    async def restart(self, actor: Actor, name: str, instance_id: str) -> Instance:
        """Run the instance again from its start under the same id, with the next run number
        (the runs before keep their steps and logs). Not while queued or running (409)."""
        self.policy.manage(actor, name, "restart")
        row = await self._row(actor.workspace, name, instance_id)
        if row["status"] in ("QUEUED", "RUNNING"):
            raise Conflict(f"a {await self._status(row)} instance cannot be restarted", {"status": await self._status(row)})
        runs = 1 + await self.db.fetchval(
            "SELECT count(*) FROM job_step WHERE job_id = $1 AND name LIKE 'restart:%'", instance_id)
        now = now_ms()
        results = await self.db.write(
            Statement("UPDATE job_step SET name = $1 || name WHERE job_id = $2 AND name NOT LIKE 'run:%' "
                      "AND name NOT LIKE 'restart:%'", (f"run:{runs}/", instance_id)),
            queue.checkpoint(instance_id, f"restart:{runs}", msgspec.json.encode({"at": now}).decode(), now),
            queue.restart(instance_id, now),
            audit.entry(actor, f"instance:{instance_id}"),
            *queue.announce(self.db.dialect),
        )
        if not results[2].rowcount:
            raise Conflict("the instance changed meanwhile; read it again")
        await self.jobs.executor.submit_woken([instance_id])
        return await self.get(actor.workspace, name, instance_id)

    async def send_event(self, actor: Actor, name: str, instance_id: str, event_type: str, payload: Any) -> int:
        """Send an instance an event: kept until it waits for that type; 409 once it has ended."""
        self.policy.send_event(actor, name)
        await self._row(actor.workspace, name, instance_id)
        return await self.jobs.send_event(actor, instance_id, event_type, payload)

    # -- the runner tick -------------------------------------------------------------------------------

    async def tick(self, actor: Actor, max_instances: int, max_steps: int) -> int:
        """Hand the executor now up to `max_instances` instances that are due (queued, or
        waiting on a timer that is due); how many. Off unless the instance setting is on."""
        self.policy.tick(actor)
        if not await self.settings.flag(RUNNER_TICK):
            raise Forbidden("the runner tick is disabled on this server", {"reason": "RUNNER_TICK_DISABLED"})
        if not 1 <= max_instances <= 1000 or not 1 <= max_steps <= 100_000:
            raise BadRequest("maxInstances is 1 to 1,000 and maxSteps 1 to 100,000")
        now = now_ms()
        rows = await self.db.fetch(
            "SELECT id, status FROM job WHERE kind = 'workflow' AND workspace_id = $1 AND ((status = 'QUEUED' "
            "AND scheduled_for <= $2) OR (status = 'WAITING' AND wake_at IS NOT NULL AND wake_at <= $2)) "
            f"ORDER BY scheduled_for LIMIT {int(max_instances)}", actor.workspace, now)
        due = [row["id"] for row in rows if row["status"] == "WAITING"]
        if due:
            await self.jobs.executor.wake([queue.wake_due(job_id, now) for job_id in due], due)
        await self.jobs.executor.submit_woken([row["id"] for row in rows])
        return len(rows)


def _page(items: list[dict[str, Any]], what: str, after: int, size: int, order: str) -> dict[str, Any]:
    """One page of `items` (each with its `seq`) after cursor `after`, and the next cursor."""
    ordered = items if order == "asc" else list(reversed(items))
    if after:
        ordered = [i for i in ordered if (i["seq"] > after if order == "asc" else i["seq"] < after)]
    page = ordered[:size]
    return {what: page, f"{what}Cursor": page[-1]["seq"] if len(ordered) > size else None}
