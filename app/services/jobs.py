"""Jobs: runs of scripts, from the request that starts them to their result and logs.

A run is committed before anyone hears of it: an asynchronous run answers with its id after
the INSERT; a synchronous one is written RUNNING (owned by this process, so the executor
skips the claim) and answered with the result once the final status is committed.

`run_script` is what the executor awaits for each run: it prepares the child (the script
version, its dependencies, `$res:`/`$var:`/`$cred:` arguments, the WM_* environment with a
token scoped to the run) and hands it to the fork server.

A run acts as an identity (`created_by`): the API caller, or whoever last changed the route,
webhook or schedule that started it. Its role is looked up when it starts; a user who is no
longer a member fails the run. Its arguments hold references only when that identity wrote
them (`resolve_refs`: an API caller, a schedule's editor); what came from outside (route and
webhook bodies, queries, path parameters, headers, events) is passed on as it is. The row
keeps the arguments as given: references are resolved only for the child.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgspec

from app.config import Settings
from app.engine import queue
from app.engine.executor import CancelToken, Executor, Outcome, QueuedJob, now_ms
from app.engine.queue import FINAL, KINDS, STATUSES, NewRun
from app.engine.forkserver import ChildJob, ForkServer
from app.engine.logs import LogSink
from app.engine.workers import Workers
from app.engine.masks import Masks
from app.errors import BadRequest, Conflict, NotFound, TooLarge, Unavailable
from app.ids import random_uuid
from app.runtimes.python.deps import InstallError, ensure_environment, ensure_locked_environment, infer_requirements
from app.runtimes.python.preload import is_light
from app.runtimes.python.runner import compile_script
from app.security.tokens import JwtCodec
from app.services.accounts import Accounts
from app.services import audit
from app.services.actor import Actor, lowest
from app.services.arguments import ArgumentChecks
from app.services.resources import Resources, UnreadableReference, may_hold_references
from app.services.scripts import Scripts, ScriptSettings
from app.services.workflow_runtime import Turn, WorkflowRuntime
from app.store.base import Database, Row, Statement

log = logging.getLogger("flowmill.jobs")
MAX_ARGS_BYTES = 5 * 1024 * 1024
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # as app.runtimes.python.steps.NAME
MAX_PAGE = 200
MAX_PREPARED = 4096  # script versions whose compiled code is kept in memory
# Scripts run outside the queue (a route's custom auth check, which anyone may call): at most
# this many at once per process; a request that waits longer than EVALUATE_WAIT_S for a turn
# is answered 503 with Retry-After, rather than forking without bound.
EVALUATE_CONCURRENCY = 4
EVALUATE_WAIT_S = 2.0
_CHILD_STATUS = {"success": "SUCCESS", "error": "FAILED", "timeout": "TIMED_OUT", "cancelled": "CANCELLED", "crashed": "FAILED",
                 "suspended": "WAITING"}


class Trigger(msgspec.Struct, frozen=True):
    kind: str  # api, route, webhook, schedule, cli, script
    detail: str = ""


def _event_text(version: dict[str, Any], event: Any) -> str | None:
    """What a run keeps of its trigger's event: only a script with a preprocessor uses it."""
    return None if event is None or not version["has_preprocessor"] else msgspec.json.encode(event).decode()


def _settings_of(row: Row) -> ScriptSettings:
    return msgspec.json.decode(row["settings"], type=ScriptSettings) if row["settings"] else ScriptSettings()


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def kind_of(version: dict[str, Any]) -> str:
    """The kind of a run of a script version: `workflow` when its `main` is one."""
    return "workflow" if version.get("workflow") else "script"


def job_view(row: Row) -> dict[str, Any]:
    """A job row as the API shows it (snake_case; the wire types camelCase it)."""
    started, finished = row["started_at"], row["finished_at"]
    return {
        "id": row["id"], "workspace": row["workspace_id"], "kind": row["kind"], "path": row["path"],
        "script_hash": row["script_hash"], "args": _decode(row["args"]), "status": row["status"],
        "result": _decode(row["result"]), "error": _decode(row["error"]),
        "trigger": {"kind": row["trigger_kind"], "detail": row["trigger_detail"]}, "request_id": row["request_id"],
        "parent_job": row["parent_job"], "root_job": row["root_job"], "created_by": row["created_by"],
        "created_at": row["created_at"], "scheduled_for": row["scheduled_for"], "started_at": started,
        "finished_at": finished, "duration_ms": finished - started if started and finished else None,
        "priority": row["priority"], "attempt": row["attempt"], "progress": row["progress"],
        "wake_at": row["wake_at"], "waiting_for": _decode(row["waiting_for"]),
        "event": None,  # read with one job only (`Jobs.get`): an event may be as large as a request
    }


def run_cursor(cursor: str | None) -> tuple[int, str] | None:
    """(created_at, id) of a page of runs' cursor `<created_at>:<id>` (BadRequest when it is
    not one this API gave), or None for the first page."""
    if not cursor:
        return None
    created, _, last_id = cursor.partition(":")
    if not (created.isascii() and created.isdigit() and len(created) <= 15) or not last_id:
        raise BadRequest("cursor is not one this API gave")
    return int(created), last_id


def outcome_of(job: dict[str, Any]) -> Outcome:
    """How a final run ended, from its view (`job_view`): the result back to JSON text."""
    return Outcome(job["status"], msgspec.json.encode(job["result"]).decode(), job["error"])


@dataclasses.dataclass(frozen=True)
class RunInput:
    """What a run of a script starts from: its job row and its script version."""

    args: str  # JSON text
    event: str | None  # JSON text, for the preprocessor
    created_by: str
    refs: bool  # whether `args` hold references to resolve (see the module's docstring)
    root_job: str | None
    parent_job: str | None
    hash: str
    path: str
    content: str
    settings: ScriptSettings
    lock: str | None
    author: str  # who saved the script version: a run never holds more than they do
    cap: str | None = None  # the most it may hold, when a capped run started it
    schema: str | dict[str, Any] = "{}"  # the version's schema (JSON text, or decoded): checks a preprocessor's output
    pause: bool = False  # somebody asked the run to pause
    cache_ttl_s: float | None = None  # the run's own result cache (a task's), when not its script's

    @classmethod
    def of_row(cls, row: Row) -> RunInput:
        ttl = row["cache_ttl_ms"]
        return cls(row["args"], row["event"], row["created_by"], bool(row["resolve_refs"]), row["root_job"],
                   row["parent_job"], row["hash"], row["path"], row["content"], _settings_of(row), row["lock"],
                   row["author"], row["role_cap"], row["schema"], bool(row["pause_requested"]),
                   None if ttl is None else ttl / 1000)

    def version(self) -> dict[str, Any]:
        """What ArgumentChecks needs of the run's script version."""
        schema = msgspec.json.decode(self.schema) if isinstance(self.schema, str) else self.schema
        return {"hash": self.hash, "schema": schema, "content": self.content}


class Jobs:
    def __init__(
        self, settings: Settings, db: Database, scripts: Scripts, resources: Resources, accounts: Accounts, jwt: JwtCodec,
        forkserver: ForkServer, lean_forkserver: ForkServer, masks: Masks,
    ) -> None:
        self.settings = settings
        self.db = db
        self.scripts = scripts
        self.resources = resources
        self.accounts = accounts
        self.jwt = jwt
        self.forkserver = forkserver
        self.lean_forkserver = lean_forkserver  # for scripts that import only light modules
        self.executor = Executor(db, capacity=2 * settings.workers, masks=masks)
        for kind in ("script", "workflow", "task"):  # a workflow, and the tasks it dispatches, are scripts' runs
            self.executor.register(kind, self.run_script)
        self.runs = self.executor.runs
        # On PostgreSQL this process is one of several serving the database (app.engine.workers).
        self.workers = Workers(db, self.executor) if db.dialect == "postgres" else None  # type: ignore[arg-type]
        self.cache_dir = settings.home / "cache" / "python"
        self._requirements: dict[str, list[str]] = {}  # by script version: read once, not per run
        # By script version and path: the fork server that runs it and its compiled code.
        self._prepared: dict[tuple[str, str], tuple[ForkServer, bytes | None]] = {}
        self.started: collections.Counter[str] = collections.Counter()  # runs started, by trigger kind
        self._evaluations = asyncio.Semaphore(EVALUATE_CONCURRENCY)
        self.arguments = ArgumentChecks()
        self.workflows = WorkflowRuntime(self)
        self.executions: Any = None  # the flow executions service, once made: workflows dispatch flows through it

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted runs, start the executor and queue what was waiting."""
        await self._recover()
        await self.executor.start()
        if self.workers is None:
            await self._pick_up_queued()
        else:
            # Other processes on the same database queue runs too: they are claimed in batches
            # as slots free, when a NOTIFY says some were queued, and at least every second.
            await self.workers.start()

    async def stop(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
        await self.executor.stop()
        if self.workers is not None:
            await self.workers.leave()

    async def _pick_up_queued(self, limit: int | None = None, page: int = 5_000) -> None:
        """Hand the executor the QUEUED runs it does not know yet, oldest first: all of them,
        read `page` at a time (a backlog left by a burst and a crash may be large), or the
        oldest `limit`."""
        after: tuple[int, str] = (-1, "")
        while True:
            size = min(page, limit) if limit is not None else page
            runs = await self.runs.queued(after, size)
            for run in runs:
                if not self.executor.knows(run.id):
                    self.executor.submit(QueuedJob.of(run))
            if limit is not None or len(runs) < size:
                return
            after = (runs[-1].scheduled_for, runs[-1].id)

    async def _recover(self) -> None:
        """RUNNING runs left by a dead process: queued again when their retries allow,
        otherwise FAILED with the reason. Never left running. On SQLite, whoever ran them
        is gone (one process owns the file): all of them, at start. On PostgreSQL, those
        of processes that stopped heartbeating (`app.engine.workers`), now and while serving."""
        if self.workers is not None:
            await self.workers.join()
            return
        statements = []
        for row in await self.runs.running():
            if row["attempt"] < row["max_attempts"] or row["kind"] in queue.RESUMABLE:
                statements.append(queue.requeue_orphan(row["id"], now_ms()))
            else:
                statements.append(queue.fail_orphan(
                    row["id"], '{"name":"ServerStopped","message":"the server stopped while this run was in flight"}',
                    now_ms()))
        if statements:
            await self.db.write(*statements)

    # -- starting runs ---------------------------------------------------------------------------------

    async def _version(self, workspace: str, path: str | None, digest: str | None) -> dict[str, Any]:
        if digest is not None:
            return await self.scripts.by_hash(workspace, digest)
        assert path is not None
        return await self.scripts.for_run(workspace, path)

    @staticmethod
    def _encode_args(args: dict[str, Any]) -> str:
        text = msgspec.json.encode(args).decode()
        if len(text) > MAX_ARGS_BYTES:
            raise TooLarge(f"a run's arguments are limited to {MAX_ARGS_BYTES} bytes")
        return text

    async def _arguments(
        self, actor: Actor, version: dict[str, Any], args: Any, text: Collection[str], refs: bool, event: Any,
    ) -> tuple[str, bool]:
        """The JSON text of a run's arguments as main gets them, checked against the script's
        schema (InvalidArguments, 400, before any run), and whether they hold references.

        Names in `text` came as text (a query, a form, the CLI) and are converted to their
        declared type. `refs`: the caller wrote them (an authenticated API caller); each
        reference must name an item the caller may read (UnreadableReference, 400), and is
        checked as what it resolves to. A script given an event has its preprocessor make
        main's arguments: they are checked in the child, after it."""
        if not isinstance(args, dict):
            raise BadRequest("a run's arguments are a JSON object")
        checked = event is None or not version["has_preprocessor"]
        if checked:
            args = self.arguments.check(version, args, text, refs=refs)
        args_text = self._encode_args(args)
        if not refs or not may_hold_references(args_text):
            return args_text, False
        resolved = await self.resources.resolve_args(actor, args)
        if checked:
            self.arguments.check(version, resolved)
        return args_text, True

    async def arguments_text(self, actor: Actor, version: dict[str, Any], args: Any) -> tuple[str, bool]:
        """The JSON text of arguments an API caller gave for a run of `version`, checked against
        its schema (400 naming each bad one), and whether they hold references to resolve."""
        return await self._arguments(actor, version, args, (), True, None)

    def insert(
        self, actor: Actor, version: dict[str, Any], args_text: str, trigger: Trigger, status: str,
        job_id: str, parent: str | None, root: str | None, scheduled_for: int, event: Any = None, refs: bool = False,
        error: dict[str, Any] | None = None,
    ) -> Statement:
        """The INSERT of a run of a script; a run whose id exists already (a schedule's tick
        fired by another process) is left as it is. `refs`: the arguments were written by the
        run's identity, and their `$var:`/`$res:`/`$cred:` strings are resolved when it runs.
        `error`: the run is FAILED before it starts, for this reason."""
        return queue.insert(NewRun(
            id=job_id, workspace=actor.workspace, kind=kind_of(version), path=version["path"], args=args_text,
            status=status,
            trigger_kind=trigger.kind, trigger_detail=trigger.detail, created_by=actor.username or "",
            created_at=now_ms(), scheduled_for=scheduled_for, policy=version["settings"].policy(version["path"]),
            script_hash=version["hash"], request_id=actor.request_id, parent=parent, root=root,
            event=_event_text(version, event), resolve_refs=refs and may_hold_references(args_text),
            role_cap=actor.run_cap, error=None if error is None else msgspec.json.encode(error).decode(),
            worker=self.executor.worker_id,
        ))

    async def enqueue(
        self, actor: Actor, args: Any, trigger: Trigger, path: str | None = None, digest: str | None = None,
        parent: str | None = None, root: str | None = None, scheduled_for: int | None = None, event: Any = None,
        refs: bool = False, text: Collection[str] = (), job_id: str | None = None,
    ) -> str:
        """Queue a run; its id once it is committed. `event` goes to the script's
        preprocessor, when it has one (which then gives main its arguments). `refs`: `actor`
        wrote `args` (an API call), so references in them resolve with its rights; otherwise
        (a route, a webhook) they are data. `text`: the arguments that came as text, to
        convert to main's types (see `_arguments`). `job_id`: the run's id, when the caller
        chooses it (a workflow instance's); Conflict (409) when a run has it already. A run of
        a script whose `main` is a workflow is of kind `workflow`."""
        version = await self._version(actor.workspace, path, digest)
        args_text, refs = await self._arguments(actor, version, args, text, refs, event)
        chosen = job_id is not None
        job_id = job_id or random_uuid()
        at = scheduled_for or now_ms()
        results = await self.db.write(
            self.insert(actor, version, args_text, trigger, "QUEUED", job_id, parent, root, at, event, refs),
            *queue.announce(self.db.dialect))
        if chosen and not results[0].rowcount:
            raise Conflict(f"a run with the id {job_id} exists already", {"id": job_id})
        self.started[trigger.kind] += 1
        self.submit(job_id, actor.workspace, version, at, parent)
        return job_id

    def submit(self, job_id: str, workspace: str, version: dict[str, Any], at_ms: int, parent: str | None = None) -> None:
        """Hand a committed QUEUED run of a script to the executor."""
        policy = version["settings"].policy(version["path"])
        self.executor.submit(QueuedJob.new(job_id, workspace, kind_of(version), version["path"], policy, parent, at_ms))

    async def run_and_wait(
        self, actor: Actor, args: Any, trigger: Trigger, path: str | None = None, digest: str | None = None,
        parent: str | None = None, event: Any = None, refs: bool = False, text: Collection[str] = (),
        job_id: str | None = None,
    ) -> tuple[str, Outcome]:
        """Run now and wait for the final status: the run's id and how it ended. `refs`,
        `text` and `job_id` as for `enqueue`."""
        version = await self._version(actor.workspace, path, digest)
        args_text, refs = await self._arguments(actor, version, args, text, refs, event)
        chosen = job_id is not None
        job_id = job_id or random_uuid()
        # Not durable: nobody hears of this run before its final status, whose commit is, and
        # takes this one to the disk with it. Until then a kill -9 still leaves it to recovery.
        results = await self.db.write(
            self.insert(actor, version, args_text, trigger, "RUNNING", job_id, parent, None, now_ms(), event, refs),
            durable=False,
        )
        if chosen and not results[0].rowcount:
            raise Conflict(f"a run with the id {job_id} exists already", {"id": job_id})
        self.started[trigger.kind] += 1
        done = self.executor.watch(job_id)
        job = QueuedJob.new(job_id, actor.workspace, kind_of(version), version["path"],
                            version["settings"].policy(version["path"]), parent, claimed=True)
        # What the INSERT wrote, handed to the run rather than read back.
        job.context = RunInput(args_text, _event_text(version, event), actor.username or "", refs, parent, parent,
                               version["hash"], version["path"], version["content"], version["settings"], version["lock"],
                               version["created_by"], actor.run_cap, version["schema"])
        self.executor.submit(job)
        try:
            outcome = await asyncio.shield(done)
        except asyncio.CancelledError:
            # The caller went away; the run goes on and keeps its record.
            self.executor.unwatch(job_id, done)
            raise
        if outcome is None:  # not carried to its end here: the record says how it ended
            outcome = outcome_of(await self.get(actor.workspace, job_id))
        return job_id, outcome

    async def wait(self, workspace: str, job_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The job once it is final (or as it is when `timeout_s` runs out)."""
        job = await self.get(workspace, job_id)
        if job["status"] in FINAL:
            return job
        done = self.executor.watch(job_id)
        try:
            # Re-read after watching: it may have finished in between.
            job = await self.get(workspace, job_id)
            if job["status"] not in FINAL:
                await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self.executor.unwatch(job_id, done)
        return await self.get(workspace, job_id)

    async def cancel(self, actor: Actor, job_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a run that nothing carries (queued, waiting, paused) at once, or kill a
        running one; its descendants with it. A finished one is left as it is."""
        await self.get(actor.workspace, job_id)
        reason = reason or f"cancelled by {actor.username}"
        error = msgspec.json.encode({"name": "Cancelled", "message": reason}).decode()
        now = now_ms()
        # On PostgreSQL the processes carrying the run or its descendants are told with the
        # commit (NOTIFY); `cancel_requested` is what they read should the notification be lost.
        results = await self.db.write(
            queue.cancel_idle(job_id, error, now), queue.cancel_idle_descendants(job_id, error, now),
            queue.request_cancel_descendants(job_id), *queue.announce_cancel(job_id, reason, self.db.dialect),
        )
        matched = results[0].rowcount
        if matched:
            self.executor.cancel(job_id, reason)  # so that a thread about to claim it lets it go
            self.executor.hub.publish(job_id, False)
        else:
            # Running, or claimed between our read and the update above: ask whoever runs it to stop.
            matched = (await self.db.write(queue.request_cancel(job_id),
                                           *queue.announce_cancel(job_id, reason, self.db.dialect)))[0].rowcount
            self.executor.cancel(job_id, reason)
        if results[2].rowcount:
            for descendant in await self.runs.running_descendants(job_id):
                self.executor.cancel(descendant, reason)
        # Audited as what it was, once the outcome is known: a finished run is left as it is.
        await self.db.write(audit.entry(actor, f"job:{job_id}", "success" if matched else "unchanged"))
        return await self.get(actor.workspace, job_id)

    async def evaluate(self, actor: Actor, path: str, args: dict[str, Any], timeout_s: float) -> Any:
        """Run the latest version of a script outside the queue and without a record (a
        route's custom auth check) as `actor`, with `args` as data (no reference resolved);
        its result. It must need no packages beyond the runtime's. At most
        EVALUATE_CONCURRENCY run at once; Unavailable (503) when no turn comes soon."""
        try:
            await asyncio.wait_for(self._evaluations.acquire(), EVALUATE_WAIT_S)
        except asyncio.TimeoutError:
            raise Unavailable("too many checks are running; try again shortly", headers={"Retry-After": "1"}) from None
        try:
            return await self._evaluate(actor, path, args, timeout_s)
        finally:
            self._evaluations.release()

    async def _evaluate(self, actor: Actor, path: str, args: dict[str, Any], timeout_s: float) -> Any:
        version = await self.scripts.latest(actor.workspace, path)
        forkserver, code = self._prepare(version["hash"], version["path"], version["content"])
        child = ChildJob(
            source=version["content"], path=version["path"], args=args, timeout_s=timeout_s,
            env={"WM_WORKSPACE": actor.workspace, "WM_USERNAME": actor.username or "", "WM_JOB_PATH": version["path"]},
            memory_limit_mb=self.settings.job_memory_limit_mb, code=code,
        )
        outcome = await (await forkserver.submit(child, lambda *line: None)).outcome
        if outcome.status != "success" or outcome.result is None:
            message = (outcome.error or {}).get("message") or outcome.exit_reason or outcome.status
            raise BadRequest(f"the script {path} ended {outcome.status}: {message}")
        return msgspec.json.decode(outcome.result)

    # -- reading ---------------------------------------------------------------------------------

    async def resume(self, actor: Actor, job_id: str) -> dict[str, Any]:
        """Wake a WAITING or PAUSED run now: it runs its next turn (its runner sees whether
        what it waited for came, and decides). Conflict (409) for a run in another status."""
        job = await self.get(actor.workspace, job_id)
        woken = await self.executor.wake([queue.wake(job_id, now_ms())], [job_id])
        if not woken:
            raise Conflict(f"the run is {job['status']}; only a WAITING or PAUSED run can be resumed",
                           {"status": job["status"]})
        await self.db.write(audit.entry(actor, f"job:{job_id}"))
        return await self.get(actor.workspace, job_id)

    async def pause(self, actor: Actor, job_id: str) -> dict[str, Any]:
        """Ask a run to pause: a QUEUED or WAITING one is PAUSED at once; a RUNNING one goes on
        to its next step boundary (its next checkpoint, or the end of its turn) and is PAUSED
        there, its pause request cleared. Resuming it (`resume`) runs its next turn, which
        replays its steps. Conflict (409) for a run in another status."""
        job = await self.get(actor.workspace, job_id)
        results = await self.db.write(queue.request_pause(job_id), queue.pause_idle(job_id))
        if not results[0].rowcount:
            raise Conflict(f"the run is {job['status']}; only a QUEUED, RUNNING or WAITING run can be paused",
                           {"status": job["status"]})
        await self.db.write(audit.entry(actor, f"job:{job_id}"))  # once it is known to have done something
        if results[1].rowcount:
            self.executor.hub.publish(job_id)
        return await self.get(actor.workspace, job_id)

    async def signal(self, actor: Actor, job_id: str, what: str, name: str, key: str, value: Any) -> bool:
        """Send a run what it may wait for: the answer to an approval, or an event (`what`),
        stored as `key` with its steps (buffered until it waits for it), and the run woken if
        it waits for it now. False when `key` is stored already; Conflict (409) for a final run."""
        job = await self.get(actor.workspace, job_id)
        if job["status"] in FINAL:
            raise Conflict(f"the run is {job['status']}: it waits for nothing", {"status": job["status"]})
        now = now_ms()
        text = self._encode_args(value) if isinstance(value, dict) else msgspec.json.encode(value).decode()
        statements = [queue.checkpoint(job_id, key, text, now), queue.wake_for(job_id, what, name, now)]
        if what == "approval" and name.isdigit():  # wmill's get_resume_urls: a URL that names no step
            statements.append(queue.wake_for_any_approval(job_id, now))
        results = await self.db.write(*statements)
        if not results[0].rowcount:
            return False
        await self.db.write(audit.entry(actor, f"job:{job_id}", action=actor.action or f"job.{what}"))
        if any(result.rowcount for result in results[1:]):
            await self.executor.submit_woken([job_id])
        return True

    async def send_event(self, actor: Actor, job_id: str, event_type: str, payload: Any) -> int:
        """Send run `job_id` an event of `event_type`: its number among that type's (events are
        buffered, each taken once, in order, by the run's `wait_for_event`)."""
        if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
            raise BadRequest("an event's type is 1-100 letters, digits and _ . : -")
        for _ in range(5):  # two events of one type at once: the second takes the next number
            number = await self.runs.count_steps(job_id, f"event:{event_type}:") + 1
            event = {"type": event_type, "payload": payload, "sentBy": actor.username}
            if await self.signal(actor, job_id, "event", event_type, f"event:{event_type}:{number}", event):
                return number
        raise Conflict("too many events of this type are being sent to this run at once; send it again")

    async def get(self, workspace: str, job_id: str) -> dict[str, Any]:
        row = await self.runs.get(workspace, job_id, event=True)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return {**job_view(row), "event": _decode(row["event"])}

    async def list(
        self, workspace: str, status: str | None = None, path: str | None = None, trigger: str | None = None,
        cursor: str | None = None, limit: int = 50, parent: str | None = None, kind: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor is `<created_at>:<id>` of the last item."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        filters = {column: value for column, value in (("status", status), ("path", path), ("trigger_kind", trigger),
                                                         ("parent_job", parent), ("kind", kind)) if value is not None}
        if kind is not None and kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
        before = run_cursor(cursor)
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self.runs.page(workspace, filters, before, limit + 1)
        items = [job_view(r) for r in rows[:limit]]
        next_cursor = f"{items[-1]['created_at']}:{items[-1]['id']}" if len(rows) > limit else None
        return items, next_cursor

    async def logs(self, workspace: str, job_id: str, after_id: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """Log lines in order, from after line id `after_id`."""
        await self.get(workspace, job_id)
        rows = await self.runs.logs(job_id, after_id, limit)
        return [{"id": r["id"], "ts": r["ts"], "stream": r["stream"], "line": r["line"]} for r in rows]

    async def set_progress(self, workspace: str, job_id: str, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise BadRequest("progress is a percentage from 0 to 100")
        if not await self.runs.set_progress(workspace, job_id, percent):
            raise NotFound(f"no job {job_id}")

    # -- running (awaited by the executor) -------------------------------------------------------------

    async def run_script(self, job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
        """Carry out one run of a script; awaited by the executor."""
        run = job.context if isinstance(job.context, RunInput) else await self._read_input(job.id)
        if run is None:
            return Outcome("FAILED", error={"name": "ScriptMissing", "message": "the script version of this run was deleted"})
        role = await self.role_of(run.created_by, job.workspace)
        if role is None:
            return Outcome("FAILED", error={"name": "NotAMember", "message": (
                f"this run acts as {run.created_by or 'nobody'}, who is not a member of workspace {job.workspace}"
            )})
        if run.author != run.created_by:
            # An editor who changes the script behind an admin's route must not borrow the admin's
            # role: the run holds no more than the script's author holds (nobody's: a viewer's).
            role = lowest(role, await self.role_of(run.author, job.workspace) or "viewer")
        if run.cap is not None:
            role = lowest(role, run.cap)
        turn = await self.workflows.begin(job, run)
        if isinstance(turn, Outcome):  # ended without a child: paused, or an approval that timed out
            return turn
        cached = await self._cached(run, sink, turn)
        if cached is not None:
            return cached
        args = msgspec.json.decode(run.args)
        if run.refs:
            try:
                # As the run (its id): the secrets it is given are masked in what it leaves.
                args = await self.resources.resolve_args(Actor(run.created_by, job.workspace, role, run_id=job.id), args)
            except UnreadableReference as error:
                return Outcome("FAILED", error={"name": "UnreadableReference", "message": error.message})
        try:
            environment = await self._environment(run, sink)
        except InstallError as error:
            sink.note(f"installing the dependencies failed:\n{error.message}")
            return Outcome("FAILED", error={"name": "DependencyInstallError", "message": error.message})
        forkserver, code = self._prepare(run.hash, run.path, run.content)
        child = ChildJob(
            source=run.content, path=run.path, args=args,
            env=self._env(job.id, job.workspace, run.path, run.created_by, role, job.timeout_s, run.root_job, run.parent_job),
            sys_path=[str(environment)] if environment else [], timeout_s=job.timeout_s,
            memory_limit_mb=self.settings.job_memory_limit_mb,
            preprocessor_event=_decode(run.event), code=code,
            steps=turn.steps, wac_executing=turn.wac_executing, task_function=turn.task_function,
        )
        if run.event is not None:  # the preprocessor makes main's arguments: the child checks them
            version = run.version()
            checker = self.arguments.of(version)  # main's arguments as checked before runs without one
            child.main_schema, child.main_takes_kwargs = checker.schema, checker.open
        handle = await forkserver.submit(child, sink.line, self._step_store(job.id))
        cancel.on_cancel(handle.cancel)
        outcome = await handle.outcome
        if handle.step_error is not None:
            return Outcome("FAILED", error={"name": "CheckpointFailed", "message": handle.step_error})
        status = _CHILD_STATUS[outcome.status]
        if outcome.status == "success":
            return Outcome(status, result=outcome.result, args=outcome.args)
        if outcome.status == "suspended":
            return await self.workflows.end(job, run, role, turn, outcome.wait or {})
        error = dict(outcome.error or {})
        if outcome.status == "timeout":
            error = {"name": "Timeout", "message": f"the run took longer than its timeout of {job.timeout_s:g} s"}
        elif outcome.status == "cancelled":
            error = {"name": "Cancelled", "message": "cancelled while running"}  # the executor puts the reason
        elif outcome.status == "crashed":
            error = {"name": "Crashed", "message": f"the script's process ended without a result: {outcome.exit_reason}"}
            log.warning("run %s of %s crashed: %s", job.id, run.path, outcome.exit_reason)
        return Outcome(status, error=error, args=outcome.args)

    async def role_of(self, username: str, workspace: str) -> str | None:
        """The role a run acting as `username` has in `workspace` now; None: not a member."""
        if not self.settings.auth:
            return "admin"  # no accounts: everything acts as the local admin
        return await self.accounts.role_in(username, workspace)

    def _prepare(self, digest: str, path: str, source: str) -> tuple[ForkServer, bytes | None]:
        """The fork server that runs a script version (the lean one if it can), and its code
        compiled: worked out once per version, not per run."""
        prepared = self._prepared.get((digest, path))
        if prepared is None:
            if len(self._prepared) >= MAX_PREPARED:
                self._prepared.clear()
            forkserver = self.lean_forkserver if is_light(source) else self.forkserver
            prepared = self._prepared[digest, path] = (forkserver, compile_script(source, path))
        return prepared

    def _step_store(self, job_id: str):  # type: ignore[no-untyped-def]
        """What stores a run's checkpoints, and says whether it is to pause there. Not durable:
        a checkpoint survives the process dying (SQLite's WAL, PostgreSQL's server), and the
        next durable commit takes it to the disk; a crash of the machine may lose the last ones,
        whose steps then run again."""
        async def store(seq: int, name: str, result: str, replace: bool) -> bool:
            results = await self.db.write(queue.checkpoint(job_id, name, result, now_ms(), replace),
                                          queue.pause_asked(job_id), durable=False)
            return bool(results[1].rowcount)
        return store

    async def _read_input(self, job_id: str) -> RunInput | None:
        row = await self.runs.with_script_version(job_id)
        return None if row is None else RunInput.of_row(row)

    async def _cached(self, run: RunInput, sink: LogSink, turn: Turn) -> Outcome | None:
        # A workflow's task is cached by its own options (its run's), keyed on its step key too:
        # its runs share the script version, and a Windmill task's its workflow's arguments.
        ttl = run.cache_ttl_s if turn.cache_key else run.settings.cache_ttl
        if not ttl:
            return None
        # Whether the arguments are references is part of the key: a run given the text
        # "$var:x" as data must never reuse the result of one that was given the variable.
        key = hashlib.sha256(f"{run.hash}\0{int(run.refs)}\0{run.args}\0{turn.cache_key}".encode()).hexdigest()[:32]
        hit = await self.runs.cached(key, now_ms() - int(ttl * 1000))
        await self.db.write(queue.set_cache_key(sink.job_id, key))
        if hit is None:
            return None
        sink.note(f"result reused from run {hit['id']} (cached for {ttl:g} s)")
        return Outcome("SUCCESS", result=hit["result"])

    async def _environment(self, run: RunInput, sink: LogSink) -> Path | None:
        """The folder of the script's packages (installed on first use, in a thread), or None."""
        if run.lock:
            return (await asyncio.to_thread(ensure_locked_environment, run.lock, self.cache_dir)).path
        requirements = self._requirements.get(run.hash)
        if requirements is None:
            requirements = self._requirements[run.hash] = infer_requirements(run.content)
        if not requirements:
            return None
        sink.note(f"dependencies: {', '.join(requirements)}")
        environment = await asyncio.to_thread(ensure_environment, requirements, self.cache_dir)
        await self.scripts.remember_lock(run.hash, environment.lock)
        return environment.path

    def _env(self, job_id: str, workspace: str, path: str, identity: str, role: str, timeout_s: float | None,
             root_job: str | None, parent_job: str | None) -> dict[str, str]:
        """The WM_* environment Windmill scripts (and the wmill client) expect; the token acts
        as the run's identity with at most `role`."""
        username = identity or "anonymous"
        ttl = int((timeout_s or self.settings.token_ttl_s) + 300)
        token, _ = self.jwt.issue(username, ttl_s=ttl, job=job_id, cap=role)
        env = {
            "WM_BASE_URL": self.settings.internal_url, "BASE_INTERNAL_URL": self.settings.internal_url,
            "WM_TOKEN": token, "WM_WORKSPACE": workspace, "WM_JOB_ID": job_id, "WM_JOB_PATH": path,
            "WM_USERNAME": username, "WM_EMAIL": f"{username}@flowmill.local", "WM_PERMISSIONED_AS": f"u/{username}",
            "WM_STATE_PATH": f"{path}/state", "WM_STATE_PATH_NEW": f"{path}/state",
            "FLOWMILL_JOB_ID": job_id,
        }
        if root_job:
            env["WM_ROOT_FLOW_JOB_ID"] = root_job
        if parent_job:
            env["WM_FLOW_JOB_ID"] = parent_job
        return env

    async def run_code(
        self, job_id: str, workspace: str, path: str, identity: str, role: str, source: str, args: dict[str, Any],
        timeout_s: float | None, on_line: Any, cancel: CancelToken | None = None, root_job: str | None = None,
    ) -> Outcome:
        """Run `source`'s `main(**args)` in a walled-off child as part of run `job_id` (a Python
        task of a flow): its packages installed as a script's are, its token that of the run.
        `on_line(ts, stream, text)` takes its output lines. Cancelled with the task awaiting it."""
        digest = hashlib.sha256(source.encode()).hexdigest()[:32]
        requirements = self._requirements.get(digest)
        if requirements is None:
            requirements = self._requirements[digest] = infer_requirements(source)
        environment = None
        if requirements:
            try:
                environment = (await asyncio.to_thread(ensure_environment, requirements, self.cache_dir)).path
            except InstallError as error:
                return Outcome("FAILED", error={"name": "DependencyInstallError", "message": error.message})
        forkserver, code = self._prepare(digest, path, source)
        child = ChildJob(
            source=source, path=path, args=args, env=self._env(job_id, workspace, path, identity, role, timeout_s,
                                                               root_job, job_id),
            sys_path=[str(environment)] if environment else [], timeout_s=timeout_s,
            memory_limit_mb=self.settings.job_memory_limit_mb, code=code,
        )
        handle = await forkserver.submit(child, on_line)
        try:
            outcome = await asyncio.shield(handle.outcome)
        except asyncio.CancelledError:
            handle.cancel()
            raise
        if outcome.status == "success":
            return Outcome("SUCCESS", result=outcome.result)
        error = dict(outcome.error or {})
        if outcome.status == "timeout":
            error = {"name": "Timeout", "message": f"the task took longer than its timeout of {timeout_s:g} s"}
        elif outcome.status == "crashed":
            error = {"name": "Crashed", "message": f"the task's process ended without a result: {outcome.exit_reason}"}
        elif outcome.status == "cancelled":
            error = {"name": "Cancelled", "message": "cancelled while running"}
        return Outcome(_CHILD_STATUS[outcome.status], error=error)
