"""The run queue: every statement on the run table (`job`), its log lines and its checkpoints.

A run of any kind — `script`, `flow`, `workflow`, or `task` (a plugin or Python task of a
flow) — is one row. Everything the executor needs to schedule and carry it (its `Policy`:
timeout, retries and backoff, priority, concurrency key, limit and window, cache TTL) and its
place in a tree of runs (parent, root) is copied onto the row when it is queued, so pick-up,
waking and recovery read the run alone, whatever its kind.

A run's life: QUEUED -> RUNNING -> a final status (SUCCESS, FAILED, CANCELLED, TIMED_OUT), or,
at the end of a turn, WAITING (for its child runs, a timer, an approval or an event) or PAUSED
(until it is resumed), which hold no executor slot and no process; waking puts it back to
QUEUED. Writes are `Statement`s so that a caller commits them together with what goes with
them (a run's last log lines with its final status, a child's end with its parent's wake).
Reads are `RunQueue` methods. Where the backends differ (PostgreSQL's `FOR UPDATE SKIP
LOCKED`), the statement says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from app.store.base import Database, Row, Statement

KINDS = ("script", "flow", "workflow", "task")
# Queued again after a crash, whatever their retries: flows and workflows go on from their
# checkpoints, a workflow's task runs again (at least once: its workflow waits for it).
RESUMABLE = ("flow", "workflow", "task")
FINAL = ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT")
SUSPENDED = ("WAITING", "PAUSED")
STATUSES = ("QUEUED", "RUNNING", *SUSPENDED, *FINAL)
_FINAL_SQL = ", ".join(f"'{status}'" for status in FINAL)

# What a run's view reads: the row as the API shows it.
VIEW_COLUMNS = (
    "id, workspace_id, kind, path, script_hash, args, status, result, error, trigger_kind, trigger_detail, "
    "request_id, parent_job, root_job, created_by, created_at, scheduled_for, started_at, finished_at, priority, "
    "attempt, progress, wake_at, waiting_for"
)
# What the executor reads to schedule a run.
_SCHEDULE_COLUMNS = (
    "id, workspace_id, kind, path, parent_job, attempt, scheduled_for, started_at, priority, timeout_ms, max_attempts, "
    "backoff_ms, "
    "concurrency_key, concurrency_limit, concurrency_window_ms"
)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a run is scheduled and carried out: copied onto the run when it is queued."""

    timeout_s: float | None = None
    max_attempts: int = 1
    backoff_s: float = 1.0
    priority: int = 0
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_window_s: float | None = None
    cache_ttl_s: float | None = None


@dataclasses.dataclass(frozen=True)
class NewRun:
    """A run to insert."""

    id: str
    workspace: str
    kind: str
    path: str
    args: str  # JSON text
    status: str  # QUEUED, or RUNNING when the process inserting it carries it at once
    trigger_kind: str
    trigger_detail: str
    created_by: str
    created_at: int
    scheduled_for: int
    policy: Policy = Policy()
    script_hash: str | None = None
    request_id: str = ""
    parent: str | None = None
    root: str | None = None
    event: str | None = None  # JSON text: the trigger's event, for a preprocessor
    resolve_refs: bool = False
    role_cap: str | None = None
    error: str | None = None  # JSON text: the run is FAILED before it starts, for this reason
    worker: str = ""  # who carries it, when inserted RUNNING


@dataclasses.dataclass(frozen=True)
class Wait:
    """What a WAITING run waits for: any of a time, its child runs (all of them, or the next
    to finish), an approval, an event of a type. Whatever comes first wakes it."""

    until_ms: int | None = None
    children: str | None = None  # "all" | "any"
    approval: str | None = None  # a name the runner knows it by
    event: str | None = None  # an event type

    def encode(self) -> str:
        return msgspec.json.encode({k: v for k, v in dataclasses.asdict(self).items() if v is not None}).decode()

    @classmethod
    def decode(cls, text: str | None) -> Wait | None:
        return None if not text else cls(**msgspec.json.decode(text))


# -- writes ----------------------------------------------------------------------------------------

_INSERT = (
    "INSERT INTO job (id, workspace_id, kind, path, script_hash, args, status, result, error, trigger_kind, "
    "trigger_detail, request_id, parent_job, root_job, created_by, created_at, scheduled_for, started_at, finished_at, "
    "priority, attempt, progress, worker, event, resolve_refs, role_cap, timeout_ms, max_attempts, backoff_ms, "
    "concurrency_key, concurrency_limit, concurrency_window_ms, cache_ttl_ms) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, 1, NULL, $20, $21, "
    "$22, $23, $24, $25, $26, $27, $28, $29, $30) ON CONFLICT (id) DO NOTHING"
)


def insert(run: NewRun) -> Statement:
    """The INSERT of a run; a run whose id exists already (a schedule's tick fired by another
    process) is left as it is."""
    if run.kind not in KINDS:
        raise ValueError(f"a run's kind is one of {', '.join(KINDS)}")
    status = "FAILED" if run.error is not None else run.status
    policy = run.policy
    return Statement(_INSERT, (
        run.id, run.workspace, run.kind, run.path, run.script_hash, run.args, status, run.error, run.trigger_kind,
        run.trigger_detail, run.request_id, run.parent, run.root or run.parent, run.created_by, run.created_at,
        run.scheduled_for, run.created_at if status == "RUNNING" else None,
        run.created_at if run.error is not None else None, policy.priority,
        run.worker if status == "RUNNING" else "", run.event, int(run.resolve_refs), run.role_cap,
        _ms(policy.timeout_s), policy.max_attempts, _ms(policy.backoff_s) or 0, policy.concurrency_key,
        policy.concurrency_limit, _ms(policy.concurrency_window_s), _ms(policy.cache_ttl_s),
    ))


def claim(job_id: str, worker: str, attempt: int, now: int) -> Statement:
    """QUEUED -> RUNNING by `worker`: a run is taken once, whoever else tries (rowcount 0)."""
    return Statement(
        "UPDATE job SET status = 'RUNNING', started_at = $1, worker = $2, attempt = $3, wake_at = NULL, "
        "waiting_for = NULL WHERE id = $4 AND status = 'QUEUED'",
        (now, worker, attempt, job_id),
    )


# Written by the process carrying the run, only while it still does: a process taken for dead
# (silent past DEAD_AFTER_S, app/engine/workers.py) whose run was recovered by another never
# writes its outcome over what the run became. '' is a run inserted RUNNING by no worker.
_STILL_CARRIED = " AND status = 'RUNNING' AND worker IN ($%d, '')"


def started(job_id: str, now: int) -> Statement:
    """When a run claimed ahead (a batch claim) really started."""
    return Statement("UPDATE job SET started_at = $1 WHERE id = $2 AND status = 'RUNNING'", (now, job_id))


def retry(job_id: str, attempt: int, at_ms: int, error: str | None, worker: str | None = None) -> Statement:
    """A failed attempt queued again for its next attempt at `at_ms` (by `worker`, if it still
    carries the run)."""
    sql = "UPDATE job SET status = 'QUEUED', attempt = $1, scheduled_for = $2, error = $3 WHERE id = $4"
    if worker is None:
        return Statement(sql, (attempt, at_ms, error, job_id))
    return Statement(sql + _STILL_CARRIED % 5, (attempt, at_ms, error, job_id, worker))


def finish(job_id: str, status: str, result: str | None, error: str | None, now: int, args: str | None = None,
           worker: str | None = None) -> Statement:
    """A run's final status (and, when a preprocessor made them, the arguments main got); by
    `worker`, if it still carries the run (rowcount 0 otherwise)."""
    if args is None:
        sql = ("UPDATE job SET status = $1, result = $2, error = $3, finished_at = $4, wake_at = NULL, waiting_for = NULL "
               "WHERE id = $5")
        values: tuple[Any, ...] = (status, result, error, now, job_id)
    else:
        sql = ("UPDATE job SET status = $1, result = $2, error = $3, finished_at = $4, args = $5, wake_at = NULL, "
               "waiting_for = NULL WHERE id = $6")
        values = (status, result, error, now, args, job_id)
    if worker is None:
        return Statement(sql, values)
    return Statement(sql + _STILL_CARRIED % (len(values) + 1), (*values, worker))


def suspend(job_id: str, status: str, wait: Wait | None) -> Statement:
    """The end of a turn: WAITING for `wait`, or PAUSED until resumed. Its slot and process are
    released; what wakes it puts it back to QUEUED."""
    assert status in SUSPENDED
    return Statement(
        "UPDATE job SET status = $1, wake_at = $2, waiting_for = $3, worker = '' WHERE id = $4 AND status = 'RUNNING'",
        (status, wait.until_ms if wait else None, wait.encode() if wait else None, job_id),
    )


def wake(job_id: str, now: int, statuses: Sequence[str] = SUSPENDED) -> Statement:
    """A WAITING (or PAUSED) run back to QUEUED, to run its next turn now."""
    marks = ", ".join(f"'{status}'" for status in statuses if status in SUSPENDED)
    return Statement(
        f"UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status IN ({marks})",
        (now, job_id),
    )


def wake_due(job_id: str, now: int) -> Statement:
    """A WAITING run whose timer is due back to QUEUED (left alone if something else woke it)."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL "
        "WHERE id = $2 AND status = 'WAITING' AND wake_at IS NOT NULL AND wake_at <= $1",
        (now, job_id),
    )


def lock_parent(parent: str, dialect: str) -> list[Statement]:
    """PostgreSQL: first in the transaction of a child's end, the parent's row locked, so that
    two children ending at once in two transactions see each other's end (read committed) and
    one of them wakes the parent. SQLite has one writer: nothing to lock."""
    return [Statement("SELECT id FROM job WHERE id = $1 FOR UPDATE", (parent,))] if dialect == "postgres" else []


def wake_parent(parent: str, now: int) -> Statement:
    """Written with a child's final status: its parent, when WAITING for its children, goes back
    to QUEUED if it waits for any of them, or for all and none is left unfinished."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        "AND (waiting_for LIKE '%\"children\":\"any\"%' OR (waiting_for LIKE '%\"children\":\"all\"%' AND NOT EXISTS "
        f"(SELECT 1 FROM job c WHERE c.parent_job = $2 AND c.status NOT IN ({_FINAL_SQL}))))",
        (now, parent),
    )


def wake_if_ready(job_id: str, now: int) -> Statement:
    """Written with a turn's end WAITING for children: back to QUEUED at once if what it waits
    for came during the turn (all children final, or, waiting for any, one finished since the
    turn started), so that no child's end is missed."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        "AND ((waiting_for LIKE '%\"children\":\"all\"%' AND NOT EXISTS "
        f"(SELECT 1 FROM job c WHERE c.parent_job = $2 AND c.status NOT IN ({_FINAL_SQL}))) "
        "OR (waiting_for LIKE '%\"children\":\"any\"%' AND EXISTS (SELECT 1 FROM job c WHERE c.parent_job = $2 "
        f"AND c.status IN ({_FINAL_SQL}) AND c.finished_at >= job.started_at)))",
        (now, job_id),
    )


def wake_if_answered(job_id: str, seen_seq: int, now: int) -> Statement:
    """Written with a turn's end WAITING for an approval or an event: back to QUEUED at once if
    one was stored after the checkpoints the turn started from (its checkpoints up to
    `seen_seq`): sent while the run ran, it found nothing WAITING to wake."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        "AND EXISTS (SELECT 1 FROM job_step s WHERE s.job_id = $2 AND s.seq > $3 "
        "AND (s.name LIKE 'approval:%' OR s.name LIKE 'event:%'))",
        (now, job_id, seen_seq),
    )


def reopen(job_id: str, now: int) -> Statement:
    """A FAILED, TIMED_OUT or CANCELLED run queued again under its id for another attempt (a
    flow execution's retry: its checkpointed tasks are kept)."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', result = NULL, error = NULL, finished_at = NULL, wake_at = NULL, "
        "waiting_for = NULL, cancel_requested = 0, attempt = attempt + 1, max_attempts = attempt + 1, "
        "scheduled_for = $1, worker = '' WHERE id = $2 AND status IN ('FAILED', 'TIMED_OUT', 'CANCELLED')",
        (now, job_id),
    )


def restart(job_id: str, now: int) -> Statement:
    """A workflow instance run again from its start under its id (its steps were set aside
    first): QUEUED as new, from any status but QUEUED and RUNNING."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', result = NULL, error = NULL, started_at = NULL, finished_at = NULL, "
        "wake_at = NULL, waiting_for = NULL, cancel_requested = 0, pause_requested = 0, attempt = 1, "
        "scheduled_for = $1, worker = '' WHERE id = $2 AND status NOT IN ('QUEUED', 'RUNNING')",
        (now, job_id),
    )


def cancel_idle(job_id: str, error: str, now: int) -> Statement:
    """Cancel a run that nothing carries (QUEUED, WAITING or PAUSED) at once."""
    return Statement(
        "UPDATE job SET status = 'CANCELLED', finished_at = $1, error = $2, wake_at = NULL, waiting_for = NULL "
        "WHERE id = $3 AND status IN ('QUEUED', 'WAITING', 'PAUSED')",
        (now, error, job_id),
    )


def cancel_idle_descendants(root: str, error: str, now: int) -> Statement:
    """With a run's cancel: its descendants that nothing carries."""
    return Statement(
        "UPDATE job SET status = 'CANCELLED', finished_at = $1, error = $2, wake_at = NULL, waiting_for = NULL "
        "WHERE root_job = $3 AND status IN ('QUEUED', 'WAITING', 'PAUSED')",
        (now, error, root),
    )


def request_cancel(job_id: str) -> Statement:
    """Mark a RUNNING run to be stopped by whoever carries it."""
    return Statement("UPDATE job SET cancel_requested = 1 WHERE id = $1 AND status = 'RUNNING'", (job_id,))


def request_cancel_descendants(root: str) -> Statement:
    return Statement("UPDATE job SET cancel_requested = 1 WHERE root_job = $1 AND status = 'RUNNING'", (root,))


def requeue_orphan(job_id: str, now: int) -> Statement:
    """A RUNNING run whose process is gone, queued again for its next attempt."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', attempt = attempt + 1, scheduled_for = $1, worker = '' "
        "WHERE id = $2 AND status = 'RUNNING'",
        (now, job_id),
    )


def fail_orphan(job_id: str, error: str, now: int) -> Statement:
    """A RUNNING run whose process is gone and whose retries are spent: FAILED with the reason."""
    return Statement(
        "UPDATE job SET status = 'FAILED', finished_at = $1, error = $2 WHERE id = $3 AND status = 'RUNNING'",
        (now, error, job_id),
    )


# -- several processes on one PostgreSQL database (app/engine/workers.py) ----------------------------

QUEUE_CHANNEL = "flowmill_queue"  # NOTIFYed with the commit of runs QUEUED: idle processes claim them
CANCEL_CHANNEL = "flowmill_cancel"  # NOTIFYed with `<run id> <reason>`: whoever carries the run stops it


def channel(name: str, schema: str) -> str:
    """A channel of one schema: processes serving another schema of the same database (side by
    side installs, tests) never hear it. What `_channel_sql` computes in the database."""
    return f"{name}.{schema}"[:63]


def _channel_sql(name: str) -> str:
    return f"left('{name}.' || current_schema(), 63)"


def announce(dialect: str) -> list[Statement]:
    """PostgreSQL: written with runs QUEUED, so that idle processes claim them at once rather
    than at their next poll (a NOTIFY is delivered when its transaction commits, and one
    transaction's identical ones once). SQLite has one process: nobody to tell."""
    if dialect != "postgres":
        return []
    return [Statement(f"SELECT pg_notify({_channel_sql(QUEUE_CHANNEL)}, '')")]


def announce_cancel(job_id: str, reason: str, dialect: str) -> list[Statement]:
    """PostgreSQL: written after `request_cancel` of a run (and of its descendants): the
    processes carrying any of them are told, with the reason, when the cancel commits."""
    if dialect != "postgres":
        return []
    return [Statement(
        f"SELECT pg_notify({_channel_sql(CANCEL_CHANNEL)}, id || ' ' || $2) FROM job "
        "WHERE (id = $1 OR root_job = $1) AND status = 'RUNNING' AND cancel_requested = 1",
        (job_id, reason[:1000]),
    )]


def claim_due(worker: str, now: int, limit: int, dialect: str) -> Statement:
    """QUEUED runs due by `now`, at most `limit`, highest priority then oldest first, taken by
    `worker` in one statement (RETURNING what the executor schedules them by). On PostgreSQL
    rows another process is claiming are skipped, not waited for (`FOR UPDATE SKIP LOCKED`):
    concurrent claimers each get other runs, and a run is claimed once. The rows to take are
    picked in a MATERIALIZED CTE: as `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` the
    planner may run the subquery again per row and take far more than `n` (measured: all).

    A run with a concurrency limit is taken only while its key has room: fewer than the limit
    RUNNING (or, with a window, started within it), counting those this claim takes ahead of
    it. One left out stays QUEUED (and says so) until a later claim finds room."""
    held = (
        "(SELECT COUNT(*) FROM job o WHERE o.concurrency_key = j.concurrency_key AND "
        "CASE WHEN COALESCE(j.concurrency_window_ms, 0) > 0 THEN o.started_at > $1 - j.concurrency_window_ms "
        "ELSE o.status = 'RUNNING' END)"
    )
    pick = (
        "SELECT id, priority, scheduled_for, concurrency_key, concurrency_limit, "
        f"CASE WHEN concurrency_limit IS NULL OR concurrency_key IS NULL THEN 0 ELSE {held} END AS held "
        "FROM job j WHERE status = 'QUEUED' AND scheduled_for <= $1 "
        f"AND (concurrency_limit IS NULL OR concurrency_key IS NULL OR {held} < concurrency_limit) "
        f"ORDER BY priority DESC, scheduled_for LIMIT {int(limit)}"
    )
    if dialect == "postgres":
        pick += " FOR UPDATE SKIP LOCKED"
    returning = ", ".join(f"job.{column.strip()}" for column in _SCHEDULE_COLUMNS.split(","))
    return Statement(
        f"WITH picked AS MATERIALIZED ({pick}), "
        "room AS (SELECT id FROM (SELECT id, concurrency_key, concurrency_limit, held, ROW_NUMBER() OVER ("
        "PARTITION BY concurrency_key ORDER BY priority DESC, scheduled_for) AS place FROM picked) ranked "
        "WHERE concurrency_limit IS NULL OR concurrency_key IS NULL OR held + place <= concurrency_limit) "
        "UPDATE job SET status = 'RUNNING', started_at = $1, worker = $2, wake_at = NULL, waiting_for = NULL "
        f"FROM room WHERE job.id = room.id AND job.status = 'QUEUED' RETURNING {returning}",
        (now, worker),
    )


def wake_overdue(before: int, now: int) -> Statement:
    """WAITING runs whose timer was due before `before`: back to QUEUED, to be claimed by any
    process (the process that set a timer wakes it on time; this is for those of a process
    that is gone, or missed it)."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL "
        "WHERE status = 'WAITING' AND wake_at IS NOT NULL AND wake_at < $2",
        (now, before),
    )


def register_worker(worker: str, now: int) -> Statement:
    """A serving process, with its first heartbeat."""
    return Statement(
        "INSERT INTO worker (id, started_at, heartbeat_at) VALUES ($1, $2, $2) "
        "ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2",
        (worker, now),
    )


def heartbeat(worker: str, now: int) -> Statement:
    """A process is alive (rowcount 0: it was declared dead and its runs recovered)."""
    return Statement("UPDATE worker SET heartbeat_at = $1 WHERE id = $2", (now, worker))


def unregister_worker(worker: str) -> Statement:
    """A process that stopped cleanly (its runs recorded first)."""
    return Statement("DELETE FROM worker WHERE id = $1", (worker,))


# What a RUNNING run whose process is gone becomes: CANCELLED if a cancel was asked for, QUEUED
# for its next attempt when its policy allows one or when it resumes from its checkpoints (a
# flow execution, a workflow: RESUMABLE), else FAILED with the reason ($2).
_AGAIN = "(attempt < max_attempts OR kind IN (" + ", ".join(f"'{k}'" for k in RESUMABLE) + "))"
_RECOVERED = (
    f"status = CASE WHEN cancel_requested = 1 THEN 'CANCELLED' WHEN {_AGAIN} THEN 'QUEUED' "
    "ELSE 'FAILED' END, "
    f"error = CASE WHEN cancel_requested = 1 THEN $3 WHEN {_AGAIN} THEN error ELSE $2 END, "
    f"finished_at = CASE WHEN cancel_requested = 1 OR NOT {_AGAIN} THEN $1::BIGINT ELSE NULL END, "
    f"scheduled_for = CASE WHEN cancel_requested = 1 OR NOT {_AGAIN} THEN scheduled_for ELSE $1 END, "
    f"attempt = CASE WHEN cancel_requested = 1 OR NOT {_AGAIN} THEN attempt ELSE attempt + 1 END, "
    "cancel_requested = 0, worker = ''"
)
_CANCELLED_LOST = '{"name":"Cancelled","message":"cancelled; the process carrying it stopped"}'


def recover_dead_worker(worker: str, dead_before: int, now: int, error: str) -> Statement:
    """PostgreSQL: the RUNNING runs of `worker`, whose last heartbeat is older than
    `dead_before`, recovered (see `_RECOVERED`) in the statement that deletes its row. The
    DELETE is the guard: of two processes recovering it at once, the second finds the row
    gone (or, if it heartbeat meanwhile, too young) and recovers nothing. RETURNING the runs
    and what they became."""
    return Statement(
        "WITH dead AS (DELETE FROM worker WHERE id = $4 AND heartbeat_at < $5 RETURNING id) "
        f"UPDATE job SET {_RECOVERED} WHERE status = 'RUNNING' AND worker IN (SELECT id FROM dead) "
        "RETURNING id, status, parent_job",
        (now, error, _CANCELLED_LOST, worker, dead_before),
    )


def recover_unregistered(started_before: int, now: int, error: str) -> Statement:
    """PostgreSQL: RUNNING runs started before `started_before` by a process that has no row
    in `worker` (one of a version before heartbeats, or whose row is gone), recovered as
    `recover_dead_worker` does. Every live process registers before it claims or inserts a
    run, so a run whose carrier has no row and that is that old has no carrier."""
    return Statement(
        f"UPDATE job SET {_RECOVERED} WHERE status = 'RUNNING' AND started_at < $4 "
        "AND NOT EXISTS (SELECT 1 FROM worker w WHERE w.id = job.worker) RETURNING id, status, parent_job",
        (now, error, _CANCELLED_LOST, started_before),
    )


def insert_lines(job_id: str, lines: list[tuple[int, str, str]]) -> Statement:
    """One multi-row INSERT of (ts ms, stream, line) rows."""
    values = ", ".join(f"(${i * 4 + 1}, ${i * 4 + 2}, ${i * 4 + 3}, ${i * 4 + 4})" for i in range(len(lines)))
    args: list[Any] = []
    for ts, stream, line in lines:
        args += [job_id, ts, stream, line]
    return Statement(f"INSERT INTO job_log (job_id, ts, stream, line) VALUES {values}", args)


def set_cache_key(job_id: str, key: str) -> Statement:
    return Statement("UPDATE job SET cache_key = $1 WHERE id = $2", (key, job_id))


def checkpoint(job_id: str, name: str, result: str, now: int, replace: bool = False) -> Statement:
    """A named step's JSON result, stored before the run is told to go on, or what the run is
    sent (an approval, an event), after the steps stored before. A name that is stored already
    keeps its first result (a replay after a crash writes it again), unless `replace`: a
    record that changes (a step's `retry:<name>`) keeps its place and takes the new result."""
    conflict = ("ON CONFLICT (job_id, name) DO UPDATE SET result = excluded.result, created_at = excluded.created_at"
                if replace else "ON CONFLICT DO NOTHING")
    return Statement(
        "INSERT INTO job_step (job_id, name, seq, result, created_at) "
        f"SELECT $1, $2, COALESCE(MAX(seq), -1) + 1, $3, $4 FROM job_step WHERE job_id = $5 {conflict}",
        (job_id, name, result, now, job_id),
    )


def pause_asked(job_id: str) -> Statement:
    """Read with a step's checkpoint, in its transaction: one row when somebody asked the run to
    pause (its carrier then stops it at this step boundary)."""
    return Statement("SELECT 1 FROM job WHERE id = $1 AND pause_requested = 1", (job_id,))


def request_pause(job_id: str) -> Statement:
    """Ask a QUEUED, RUNNING or WAITING run to pause: a RUNNING one stops at its next step
    boundary; one that nothing carries is paused by `pause_idle` (rowcount 0: the run is in
    another status)."""
    return Statement(
        "UPDATE job SET pause_requested = 1 WHERE id = $1 AND status IN ('QUEUED', 'RUNNING', 'WAITING')", (job_id,))


def clear_pause(job_id: str) -> Statement:
    """Forget a pause request (the run paused, or the request is withdrawn)."""
    return Statement("UPDATE job SET pause_requested = 0 WHERE id = $1", (job_id,))


def pause_idle(job_id: str) -> Statement:
    """A QUEUED or WAITING run asked to pause: PAUSED at once (it holds nothing to stop), its
    request cleared. What it waited for stays written; resuming it (`wake`) runs its next turn,
    which looks again."""
    return Statement(
        "UPDATE job SET status = 'PAUSED', pause_requested = 0, worker = '' "
        "WHERE id = $1 AND status IN ('QUEUED', 'WAITING') AND pause_requested = 1",
        (job_id,),
    )


def wake_for_any_approval(job_id: str, now: int) -> Statement:
    """A workflow WAITING for an approval, whatever its name, back to QUEUED: an answer through a
    URL that names no step (wmill's `get_resume_urls`) answers the approval it waits for."""
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        "AND kind = 'workflow' AND waiting_for LIKE '%\"approval\":%'",
        (now, job_id),
    )


def wake_if_decided(job_id: str, approval_ids: tuple[str, ...], now: int) -> Statement:
    """Run in the commit that makes a flow execution WAITING for `approval_ids`: back to QUEUED
    at once if one was decided during its turn (its decision found the run RUNNING and woke
    nothing)."""
    marks = ", ".join(f"${i + 3}" for i in range(len(approval_ids)))
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        f"AND EXISTS (SELECT 1 FROM approval WHERE id IN ({marks}) AND status <> 'PENDING')",
        (now, job_id, *approval_ids),
    )


def wake_for(job_id: str, what: str, name: str, now: int) -> Statement:
    """A run WAITING for this approval (`what` = "approval") or this type of event ("event")
    back to QUEUED."""
    assert what in ("approval", "event")
    return Statement(
        "UPDATE job SET status = 'QUEUED', scheduled_for = $1, wake_at = NULL WHERE id = $2 AND status = 'WAITING' "
        "AND waiting_for LIKE $3",
        (now, job_id, "%" + msgspec.json.encode({what: name}).decode()[1:-1] + "%"),
    )


# -- the executor's view of a run --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """A run as the executor schedules it, read from its row."""

    id: str
    workspace: str
    kind: str
    path: str
    parent: str | None
    attempt: int
    scheduled_for: int
    policy: Policy
    resumed: bool = False  # it ran a turn before (it waited, or was recovered): it may have checkpoints


def scheduled(row: Row) -> Scheduled:
    return Scheduled(
        row["id"], row["workspace_id"], row["kind"], row["path"], row["parent_job"], row["attempt"], row["scheduled_for"],
        Policy(timeout_s=_s(row["timeout_ms"]), max_attempts=row["max_attempts"], backoff_s=_s(row["backoff_ms"]) or 0.0,
               priority=row["priority"], concurrency_key=row["concurrency_key"],
               concurrency_limit=row["concurrency_limit"], concurrency_window_s=_s(row["concurrency_window_ms"])),
        row["started_at"] is not None,
    )


# -- reads -----------------------------------------------------------------------------------------


class RunQueue:
    """The reads of the run table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def queued(self, after: tuple[int, str], size: int) -> list[Scheduled]:
        """QUEUED runs in (scheduled_for, id) order after `after`."""
        rows = await self.db.fetch(
            f"SELECT {_SCHEDULE_COLUMNS} FROM job WHERE status = 'QUEUED' "
            "AND (scheduled_for > $1 OR (scheduled_for = $1 AND id > $2)) "
            f"ORDER BY scheduled_for, id LIMIT {int(size)}",
            *after,
        )
        return [scheduled(row) for row in rows]

    async def of_ids(self, ids: Iterable[str], status: str = "QUEUED") -> list[Scheduled]:
        """The runs among `ids` that are in `status` (at most 500 ids a read)."""
        found: list[Scheduled] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join(f"${i + 2}" for i in range(len(chunk)))
            rows = await self.db.fetch(f"SELECT {_SCHEDULE_COLUMNS} FROM job WHERE status = $1 AND id IN ({marks})",
                                       status, *chunk)
            found += [scheduled(row) for row in rows]
        return found

    async def running(self) -> list[Row]:
        """RUNNING runs: their id, who carries them, their attempt and how many they may have."""
        return await self.db.fetch("SELECT id, kind, worker, attempt, max_attempts FROM job WHERE status = 'RUNNING'")

    async def cancel_requested(self, worker: str) -> list[str]:
        """RUNNING runs carried by `worker` that somebody asked to stop (the durable form of
        a cancel notification, read in case one was lost)."""
        rows = await self.db.fetch(
            "SELECT id FROM job WHERE worker = $1 AND status = 'RUNNING' AND cancel_requested = 1", worker)
        return [row["id"] for row in rows]

    async def dead_workers(self, before: int) -> list[str]:
        """Processes whose last heartbeat is older than `before`."""
        rows = await self.db.fetch("SELECT id FROM worker WHERE heartbeat_at < $1", before)
        return [row["id"] for row in rows]

    async def timers(self) -> list[tuple[int, str]]:
        """(wake_at, id) of the WAITING runs with a timer."""
        rows = await self.db.fetch("SELECT wake_at, id FROM job WHERE status = 'WAITING' AND wake_at IS NOT NULL")
        return [(row["wake_at"], row["id"]) for row in rows]

    async def stalled_parents(self) -> list[str]:
        """WAITING runs waiting for all their children, none of which is unfinished: a wake lost
        to two children finishing at once in two processes (PostgreSQL's read committed)."""
        rows = await self.db.fetch(
            "SELECT p.id FROM job p WHERE p.status = 'WAITING' AND p.waiting_for LIKE '%\"children\":\"all\"%' "
            f"AND NOT EXISTS (SELECT 1 FROM job c WHERE c.parent_job = p.id AND c.status NOT IN ({_FINAL_SQL}))"
        )
        return [row["id"] for row in rows]

    async def get(self, workspace: str, job_id: str, event: bool = False) -> Row | None:
        columns = f"{VIEW_COLUMNS}, event" if event else VIEW_COLUMNS
        return await self.db.fetchrow(f"SELECT {columns} FROM job WHERE id = $1 AND workspace_id = $2", job_id, workspace)

    async def with_script_version(self, job_id: str) -> Row | None:
        """What the runner of a script reads of a run and the script version it runs."""
        return await self.db.fetchrow(
            "SELECT j.args, j.event, j.created_by, j.resolve_refs, j.root_job, j.parent_job, v.hash, v.path, v.content, "
            "v.settings, v.lock, v.created_by AS author, j.role_cap, v.schema, j.pause_requested, j.cache_ttl_ms "
            "FROM job j JOIN script_version v ON v.hash = j.script_hash WHERE j.id = $1",
            job_id,
        )

    async def running_descendants(self, root: str) -> list[str]:
        rows = await self.db.fetch("SELECT id FROM job WHERE root_job = $1 AND status = 'RUNNING'", root)
        return [row["id"] for row in rows]

    async def status(self, workspace: str, job_id: str) -> str | None:
        return await self.db.fetchval("SELECT status FROM job WHERE id = $1 AND workspace_id = $2", job_id, workspace)

    async def page(self, workspace: str, filters: dict[str, str], before: tuple[int, str] | None, limit: int) -> list[Row]:
        """Newest first: runs of `workspace` matching `filters` (column: value), created before
        `before` (created_at, id); `limit` of them."""
        clauses, args = ["workspace_id = $1"], [workspace]
        for column, value in filters.items():
            assert column in ("status", "path", "trigger_kind", "parent_job", "kind")
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
        if before is not None:
            args += list(before)
            clauses.append(f"(created_at < ${len(args) - 1} OR (created_at = ${len(args) - 1} AND id < ${len(args)}))")
        return await self.db.fetch(
            f"SELECT {VIEW_COLUMNS} FROM job WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC "
            f"LIMIT {int(limit)}",
            *args,
        )

    async def flow_page(self, workspace: str, paths: list[str] | None, namespace: str | None, status: str | None,
                        since: int | None, before: tuple[int, str] | None, limit: int) -> list[Row]:
        """Flow executions of `workspace`, newest first: of one of `paths`, of flows in
        `namespace`, in `status`, created since `since` (ms), before `before` (created_at, id)."""
        clauses, args = ["workspace_id = $1", "kind = 'flow'"], [workspace]
        if paths is not None:
            marks = []
            for path in paths:
                args.append(path)
                marks.append(f"${len(args)}")
            clauses.append(f"path IN ({', '.join(marks)})")
        if namespace is not None:
            prefix = f"f/{namespace}/"
            args += [len(prefix), prefix]
            clauses.append(f"substr(path, 1, ${len(args) - 1}) = ${len(args)}")
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if since is not None:
            args.append(since)
            clauses.append(f"created_at >= ${len(args)}")
        if before is not None:
            args += list(before)
            clauses.append(f"(created_at < ${len(args) - 1} OR (created_at = ${len(args) - 1} AND id < ${len(args)}))")
        return await self.db.fetch(
            f"SELECT {VIEW_COLUMNS} FROM job WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC "
            f"LIMIT {int(limit)}",
            *args,
        )

    async def logs(self, job_id: str, after_id: int, limit: int) -> list[Row]:
        return await self.db.fetch(
            "SELECT id, ts, stream, line FROM job_log WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            job_id, after_id, limit,
        )

    async def set_progress(self, workspace: str, job_id: str, percent: int) -> bool:
        result = await self.db.execute("UPDATE job SET progress = $1 WHERE id = $2 AND workspace_id = $3",
                                       percent, job_id, workspace)
        return result.rowcount > 0

    async def cached(self, key: str, since_ms: int) -> Row | None:
        """The newest successful run with this cache key finished since `since_ms`."""
        return await self.db.fetchrow(
            "SELECT id, result FROM job WHERE cache_key = $1 AND status = 'SUCCESS' AND finished_at >= $2 "
            "ORDER BY finished_at DESC LIMIT 1",
            key, since_ms,
        )

    async def count_steps(self, job_id: str, prefix: str) -> int:
        return await self.db.fetchval("SELECT count(*) FROM job_step WHERE job_id = $1 AND name LIKE $2",
                                      job_id, prefix.replace("%", "") + "%")

    async def steps(self, job_id: str) -> list[Row]:
        """A run's checkpoints, in order."""
        return await self.db.fetch("SELECT seq, name, result, created_at FROM job_step WHERE job_id = $1 ORDER BY seq",
                                   job_id)
