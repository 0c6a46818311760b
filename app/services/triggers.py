"""Triggers: webhooks (`POST /api/v1/webhook/{key}`) and cron schedules, and the loop that
fires schedules.

A schedule fires exactly once per tick, across restarts and across processes sharing a
PostgreSQL database: the run of a tick has an id derived from (trigger, tick), so a second
attempt to fire the same tick inserts nothing. The tick's run and the advance of
`next_fire_at` are committed together.

A webhook's or schedule's runs act as whoever last created or changed it (`updated_by`,
shown as `runAs`), with that user's role when the run starts. A schedule's arguments were
written by that user: their `$var:`/`$res:`/`$cred:` references resolve with that user's
rights. A webhook's key and secret are shown only to editors and above.

Catch-up after downtime (`catchUp`): `all` (the default) runs every tick missed in the last
hour, at most the latest 100; `last` runs only the latest missed tick; `none` skips them.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import re
import secrets
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

import msgspec
from croniter import CroniterError, croniter

from app.engine import queue
from app.errors import BadRequest, Conflict, FlowmillError, Forbidden, InvalidArguments, NotFound
from app.security.vault import Vault
from app.services.actor import Actor, at_least, now_ms, refuse_run_token
from app.services.jobs import Jobs, Trigger as RunTrigger
from app.services.routes import Runnable
from app.store.base import Database, Row, Statement

KINDS = ("webhook", "schedule")
CATCH_UP = ("all", "last", "none")
CATCH_UP_WINDOW_MS = 3600_000
CATCH_UP_MAX = 100
TICK_S = 0.2
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_TICK_IDS = uuid.UUID("6d1f3c52-8f0e-4a53-9a43-4c2b8e1f7a10")
_COLUMNS = (
    "id, workspace_id, kind, key, runnable_kind, runnable_path, secret, cron, timezone, args, enabled, catch_up, "
    "summary, description, next_fire_at, last_fire_at, created_by, created_at, updated_at, updated_by"
)
log = logging.getLogger("flowmill.triggers")


class TriggerSpec(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    kind: str
    runnable: Runnable
    key: str | None = None  # webhook: generated when left out
    secret: str | None = None  # webhook: optional
    cron: str | None = None  # schedule: 5 fields, or 6 with seconds first
    timezone: str = "UTC"
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    enabled: bool = True
    catch_up: str = "all"
    summary: str = ""
    description: str = ""


class Webhook(msgspec.Struct, frozen=True):
    """A webhook as served."""

    id: str
    workspace: str
    path: str
    secret: str | None
    run_as: str  # who last created or changed it: its runs act as them
    enabled: bool
    kind: str = "script"  # what it runs: a script or a flow


def _cron(expression: str) -> tuple[str, bool]:
    """(the expression, whether it has seconds); BadRequest when croniter cannot read it."""
    fields = expression.split()
    seconds = len(fields) == 6
    if len(fields) not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=seconds):
        raise BadRequest(f"cron {expression!r} is not valid: 5 fields (minute hour day month weekday) or 6 with seconds first")
    return " ".join(fields), seconds


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        if len(name) > 64:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the file system refuses
        raise BadRequest(f"timezone {name[:64]!r} is not a known IANA time zone (e.g. UTC, Europe/Paris)") from None


def _ticks(expression: str, timezone: str, after_ms: int) -> Iterator[int]:
    """The ticks strictly after `after_ms` (epoch ms), in the schedule's time zone."""
    expression, seconds = _cron(expression)
    start = datetime.datetime.fromtimestamp(after_ms / 1000, _zone(timezone))
    ticks = croniter(expression, start, second_at_beginning=seconds)
    while True:
        try:
            tick = ticks.get_next(datetime.datetime)
        except (CroniterError, ValueError, OverflowError):  # croniter gives up searching quickly
            raise BadRequest(f"cron {expression!r} never fires (a date that does not exist, such as February 30)") from None
        yield int(tick.timestamp() * 1000)


def fire_times(expression: str, timezone: str, after_ms: int, count: int) -> list[int]:
    """The next `count` ticks strictly after `after_ms` (epoch ms)."""
    return list(itertools.islice(_ticks(expression, timezone, after_ms), count))


def tick_job_id(trigger_id: str, tick_ms: int) -> str:
    return str(uuid.uuid5(_TICK_IDS, f"{trigger_id}:{tick_ms}"))


class Triggers:
    executions: Any = None  # app.services.executions.Executions: set once built, for flows

    def __init__(self, db: Database, vault: Vault, jobs: Jobs) -> None:
        self.db = db
        self.vault = vault
        self.jobs = jobs
        self._webhooks: dict[str, Webhook | None] = {}
        self._loaded = 0.0
        self._max_age = float("inf") if db.dialect == "sqlite" else 1.0
        self._loop_task: asyncio.Task[None] | None = None

    # -- managing ---------------------------------------------------------------------------------

    async def create(self, actor: Actor, spec: TriggerSpec) -> dict[str, Any]:
        """A new webhook or schedule (editors and admins; not a run's token: the trigger
        would go on acting as the run's identity after the run)."""
        self._may_edit(actor)
        refuse_run_token(actor, "create triggers")
        trigger_id = str(uuid.uuid4())
        values = await self._checked(actor, spec, trigger_id)
        now = now_ms()
        await self._write(Statement(
            f"INSERT INTO run_trigger ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
            "NULL, $16, $17, $17, $16)",
            (trigger_id, actor.workspace, spec.kind, *values, actor.username or "", now),
        ))
        return await self.get(actor.workspace, trigger_id, reveal=True)

    async def update(self, actor: Actor, trigger_id: str, spec: TriggerSpec) -> dict[str, Any]:
        """Change a trigger; its runs act as `actor` from now on."""
        self._may_edit(actor)
        refuse_run_token(actor, "change triggers")
        row = await self._row(actor.workspace, trigger_id)
        if spec.kind != row["kind"]:
            raise BadRequest("a trigger's kind cannot change")
        if spec.kind == "webhook" and spec.secret is None and row["secret"] is not None:
            spec = msgspec.structs.replace(spec, secret=self._secret(row))  # left out: kept
        values = await self._checked(actor, spec, trigger_id, keep_key=row["key"])
        await self._write(Statement(
            "UPDATE run_trigger SET key = $1, runnable_kind = $2, runnable_path = $3, secret = $4, cron = $5, "
            "timezone = $6, args = $7, enabled = $8, catch_up = $9, summary = $10, description = $11, next_fire_at = $12, "
            "updated_at = $13, updated_by = $14 WHERE id = $15",
            (*values, now_ms(), actor.username or "", trigger_id),
        ))
        return await self.get(actor.workspace, trigger_id, reveal=True)

    async def delete(self, actor: Actor, trigger_id: str) -> None:
        self._may_edit(actor)
        await self._row(actor.workspace, trigger_id)
        await self._write(Statement("DELETE FROM run_trigger WHERE id = $1", (trigger_id,)))

    async def get(self, workspace: str, trigger_id: str, reveal: bool = False) -> dict[str, Any]:
        """A trigger as the API shows it; a webhook's key only with `reveal` (editors)."""
        return trigger_view(await self._row(workspace, trigger_id), reveal)

    async def list(self, workspace: str, kind: str | None = None, reveal: bool = False) -> list[dict[str, Any]]:
        """The workspace's triggers, oldest first; webhook keys only with `reveal` (editors)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM run_trigger WHERE workspace_id = $1 ORDER BY created_at, id", workspace
        )
        return [trigger_view(r, reveal) for r in rows if kind is None or r["kind"] == kind]

    async def _row(self, workspace: str, trigger_id: str) -> Row:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM run_trigger WHERE id = $1 AND workspace_id = $2", trigger_id, workspace
        )
        if row is None:
            raise NotFound(f"no trigger {trigger_id}")
        return row

    @staticmethod
    def _may_edit(actor: Actor) -> None:
        if not at_least(actor.role, "editor"):
            raise Forbidden("managing triggers needs the editor role")

    async def _write(self, statement: Statement) -> None:
        try:
            await self.db.write(statement)
        except Exception as error:
            if "unique" in str(error).lower():
                raise Conflict("a webhook with this key exists already") from None
            raise
        self._webhooks.clear()

    async def _checked(self, actor: Actor, spec: TriggerSpec, trigger_id: str, keep_key: str | None = None) -> tuple[Any, ...]:
        """The column values of a valid spec (from `key` to `next_fire_at`); BadRequest otherwise."""
        if spec.kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
        if spec.runnable.kind not in ("script", "flow"):
            raise BadRequest("a trigger runs a script or a flow (runnable.kind script or flow)")
        path = spec.runnable.path.strip("/")
        if spec.runnable.kind == "flow":
            assert self.executions is not None
            await self.executions.check_start(actor.workspace, path, spec.args if spec.kind == "schedule" else None)
        elif spec.kind == "schedule" and spec.enabled:
            version = await self.jobs.scripts.latest(actor.workspace, path)  # NotFound when there is no such script
            # Its references resolve at each tick, with the rights its editor has then. A
            # disabled one is not checked: one whose script changed can be switched off as it is.
            self.jobs.arguments.check(version, spec.args, refs=True)
        else:
            await self.jobs.scripts.latest(actor.workspace, path)  # NotFound when there is no such script
        if spec.catch_up not in CATCH_UP:
            raise BadRequest(f"catchUp must be one of {', '.join(CATCH_UP)}")
        if len(spec.summary) > 1000 or len(spec.description) > 10_000:
            raise BadRequest("summary is at most 1,000 characters, description 10,000")
        args = msgspec.json.encode(spec.args).decode()
        key = secret = cron = zone = next_fire = None
        if spec.kind == "webhook":
            if spec.cron is not None:
                raise BadRequest("a webhook has no cron")
            key = spec.key if spec.key is not None else keep_key or secrets.token_urlsafe(18)
            if not _KEY.match(key):
                raise BadRequest("a webhook key is 1 to 200 letters, digits, _ or -")
            if spec.secret is not None:
                if not spec.secret:
                    raise BadRequest("a webhook secret cannot be empty (leave it out for none)")
                secret = self.vault.encrypt(spec.secret.encode(), f"trigger:{trigger_id}")
        else:
            if spec.cron is None:
                raise BadRequest("a schedule needs a cron")
            if spec.key is not None or spec.secret is not None:
                raise BadRequest("a schedule has no key or secret")
            cron, zone = _cron(spec.cron)[0], spec.timezone
            next_fire = fire_times(cron, zone, now_ms(), 1)[0]
        return (key, spec.runnable.kind, path, secret, cron, zone, args, int(spec.enabled), spec.catch_up, spec.summary,
                spec.description, next_fire)

    def _secret(self, row: Row) -> str | None:
        return None if row["secret"] is None else self.vault.decrypt(row["secret"], f"trigger:{row['id']}").decode()

    # -- webhooks ---------------------------------------------------------------------------------

    async def webhook(self, key: str) -> Webhook | None:
        """The webhook with this key (cached; None when there is none)."""
        if time.monotonic() - self._loaded > self._max_age:
            self._webhooks.clear()
            self._loaded = time.monotonic()
        if key not in self._webhooks:
            if len(self._webhooks) > 10_000:
                self._webhooks.clear()
            row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM run_trigger WHERE key = $1 AND kind = 'webhook'", key)
            self._webhooks[key] = None if row is None else Webhook(
                row["id"], row["workspace_id"], row["runnable_path"], self._secret(row), row["updated_by"], bool(row["enabled"]),
                row["runnable_kind"] or "script",
            )
        return self._webhooks[key]

    # -- schedules --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._fire_forever())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass

    async def _fire_forever(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:  # a passing database error must not stop the schedules
                log.exception("firing schedules failed")
            await asyncio.sleep(TICK_S)

    async def fire_due(self, now: int | None = None) -> int:
        """Fire the ticks that are due; how many runs were started."""
        now = now or now_ms()
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM run_trigger WHERE kind = 'schedule' AND enabled = 1 AND next_fire_at <= $1", now
        )
        started = 0
        for row in rows:
            try:
                started += await self._fire(row, now)
            except BadRequest as error:
                # A schedule that can never fire again (saved before its cron was checked):
                # it stops being due, rather than failing every tick and the schedules after it.
                log.warning("schedule %s stops: %s", row["id"], error.message)
                await self.db.write(Statement(
                    "UPDATE run_trigger SET next_fire_at = NULL WHERE id = $1 AND next_fire_at = $2",
                    (row["id"], row["next_fire_at"]),
                ))
        return started

    async def _fire(self, row: Row, now: int) -> int:
        due, cron, zone = row["next_fire_at"], row["cron"], row["timezone"]
        ticks = self._missed(cron, zone, due, now, row["catch_up"])
        following = fire_times(cron, zone, now, 1)[0]
        advance = Statement(
            "UPDATE run_trigger SET next_fire_at = $1, last_fire_at = $2 WHERE id = $3 AND next_fire_at = $4",
            (following, ticks[-1] if ticks else row["last_fire_at"], row["id"], due),
        )
        # The role is the run's business: looked up when it starts (Jobs.run_script).
        actor = Actor(row["updated_by"] or None, row["workspace_id"], None)
        if row["runnable_kind"] == "flow":
            return await self._fire_flow(row, actor, ticks, advance)
        try:
            version = await self.jobs.scripts.for_run(row["workspace_id"], row["runnable_path"])
        except NotFound:
            log.warning("schedule %s: no script %s; tick skipped", row["id"], row["runnable_path"])
            await self.db.write(advance)
            return 0
        unfit = self._unfit(version, row["args"])
        inserts = [
            self.jobs.insert(actor, version, row["args"], RunTrigger("schedule", row["id"]), "QUEUED",
                              tick_job_id(row["id"], tick), None, None, tick, refs=True, error=unfit)
            for tick in ticks
        ]
        results = await self.db.write(advance, *inserts, *(queue.announce(self.db.dialect) if inserts else ()))
        started = 0
        for tick, result in zip(ticks, results[1:]):
            if result.rowcount and unfit is None:  # not fired already by another process or before a restart
                self.jobs.submit(tick_job_id(row["id"], tick), row["workspace_id"], version, tick)
                started += 1
        self.jobs.started["schedule"] += started
        return started

    async def _fire_flow(self, row: Row, actor: Actor, ticks: list[int], advance: Statement) -> int:
        """A schedule's ticks of a flow: one execution each, then the schedule moves on (an
        execution's id is made from its tick: a tick fired twice, by two processes or again
        after a crash, starts one)."""
        started = 0
        assert self.executions is not None
        for tick in ticks:
            try:
                await self.executions.start(actor, row["runnable_path"], msgspec.json.decode(row["args"]),
                                            RunTrigger("schedule", row["id"]), at_ms=tick,
                                            job_id=tick_job_id(row["id"], tick))
                started += 1
            except FlowmillError as error:
                log.warning("schedule %s: the flow %s did not start: %s", row["id"], row["runnable_path"], error.message)
        await self.db.write(advance)
        return started

    def _unfit(self, version: dict[str, Any], args: str) -> dict[str, Any] | None:
        """Why a schedule's arguments no longer fit its script (changed since the schedule
        was saved): the error its ticks' runs fail with; None when they fit."""
        try:
            self.jobs.arguments.check(version, msgspec.json.decode(args), refs=True)
        except InvalidArguments as error:
            return {"name": "InvalidArguments", "message": f"the schedule's arguments do not fit {version['path']}: "
                    f"{error.message}", "fields": error.details["fields"]}
        return None

    @staticmethod
    def _missed(cron: str, zone: str, due: int, now: int, policy: str) -> list[int]:
        """The ticks to run now: `due`, and those after it up to `now` (missed while down),
        as the catch-up policy allows."""
        start = max(due, now - CATCH_UP_WINDOW_MS)
        ticks = [due] if due >= start else []
        for tick in _ticks(cron, zone, due if due >= start else start - 1):
            if tick > now:
                break
            ticks.append(tick)
        if len(ticks) <= 1:
            return ticks  # on time: nothing was missed
        return {"all": ticks[-CATCH_UP_MAX:], "last": ticks[-1:], "none": []}[policy]


def trigger_view(row: Row, reveal: bool = False) -> dict[str, Any]:
    """A trigger as the API shows it: its secret left out, and a webhook's key (a secret too:
    whoever has it may fire the webhook) only with `reveal`."""
    view: dict[str, Any] = {
        "id": row["id"], "workspace": row["workspace_id"], "kind": row["kind"],
        "runnable": {"kind": row["runnable_kind"], "path": row["runnable_path"]}, "args": msgspec.json.decode(row["args"]),
        "enabled": bool(row["enabled"]), "summary": row["summary"], "description": row["description"],
        "createdBy": row["created_by"], "createdAt": row["created_at"], "updatedBy": row["updated_by"],
        "updatedAt": row["updated_at"], "runAs": row["updated_by"],
    }
    if row["kind"] == "webhook":
        view["hasSecret"] = row["secret"] is not None
        if reveal:
            view.update(key=row["key"], url=f"/api/v1/webhook/{row['key']}")
    else:
        view.update(cron=row["cron"], timezone=row["timezone"], catchUp=row["catch_up"], nextFireAt=row["next_fire_at"],
                    lastFireAt=row["last_fire_at"])
    return view
