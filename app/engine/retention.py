"""Retention: finished runs, their log lines and audit entries are pruned while serving.

Two rules for runs, each off at 0 (`Policy`):

- age: a finished run (SUCCESS, FAILED, CANCELLED, TIMED_OUT) goes `run_days` after it
  finished;
- count: of each runnable's finished runs (workspace + path), the newest `runs_per_script`
  (by when they finished) are kept and older ones go.

A run that is not finished (QUEUED, RUNNING, WAITING, PAUSED) is never pruned, and neither is
a finished run whose root run is not finished yet (a step of a flow or workflow that still
waits may read it). A run's log lines go with it, in the same transaction. Audit entries go
`audit_days` after they were written.

Work is done in small transactions (at most `RUN_BATCH` runs and `LINE_BATCH` log lines, or
`AUDIT_BATCH` audit entries), each followed by a pause of at least `PAUSE_S` and `DUTY` times
what the transaction took, so that pruning holds the single SQLite writer a few milliseconds
at a time and at most about a fifth of the time, on a fast machine or a slow one, and requests
keep their latency (measured here: a delete of 50 runs and 150 lines takes ~3 ms on SQLite); a
run with more lines than a batch has its lines deleted in batches first. Reads use the indexes of migration 0012 and read at most
a batch. On PostgreSQL every delete locks its rows with `FOR UPDATE SKIP LOCKED`: processes
pruning at the same time take disjoint rows, and none waits for another or deadlocks.

Every statement retention (and `flowmill doctor`) runs on the `job` and `job_log` tables is
in this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.store.base import Database, Result, Statement

log = logging.getLogger("flowmill.retention")

FINAL = ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT")
RUN_BATCH = 50  # runs per transaction (and per read of candidates)
LINE_BATCH = 200  # log lines per transaction: with RUN_BATCH, at most 250 rows
AUDIT_BATCH = 500  # audit entries are small rows with one index
PAUSE_S = 0.02  # at least this between two transactions: the writer serves others meanwhile
DUTY = 4.0  # and at least this many times what the last one took
MAINTAIN_STEPS = 10_000  # at most this many steps of `Database.maintain` after a pass
WAL_TRIES = 5  # steps that may find the writer busy before the WAL is left to the next pass
DAY_MS = 86_400_000
FIRST_PASS_S = 30  # after start, at most this long before the first pass

_FINAL = "(" + ", ".join(f"'{status}'" for status in FINAL) + ")"
# A finished run whose root run is still unfinished is kept: a waiting flow or workflow may read it.
_ROOT_DONE = f"NOT EXISTS (SELECT 1 FROM job r WHERE r.id = job.root_job AND r.status NOT IN {_FINAL})"


@dataclasses.dataclass(frozen=True)
class Policy:
    """What is kept; 0 turns a rule off."""

    run_days: int = 30
    runs_per_script: int = 1000
    audit_days: int = 365

    @property
    def active(self) -> bool:
        return bool(self.run_days or self.runs_per_script or self.audit_days)


@dataclasses.dataclass
class Pruned:
    """What a pass deleted, and in how many transactions."""

    runs: int = 0
    log_lines: int = 0
    audit_entries: int = 0
    transactions: int = 0

    def add(self, other: Pruned) -> None:
        self.runs += other.runs
        self.log_lines += other.log_lines
        self.audit_entries += other.audit_entries
        self.transactions += other.transactions

    @property
    def anything(self) -> bool:
        return bool(self.runs or self.log_lines or self.audit_entries)


# -- statements --------------------------------------------------------------------------------


def _skip_locked(dialect: str) -> str:
    return " FOR UPDATE SKIP LOCKED" if dialect == "postgres" else ""


def _is_final(dialect: str) -> str:
    """The status test. On SQLite written `+status` so that it never picks an index: without
    statistics (a fresh file, no ANALYZE) the planner otherwise answers `status IN (...)` from
    job_queue, walking every finished run (measured: 8 ms for 50 ids among 20,000 runs, against
    0.6 ms by id), and sorts the age rule's candidates instead of reading job_finished in order."""
    return f"{'+' if dialect == 'sqlite' else ''}status IN {_FINAL}"


def _marks(count: int, first: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


def expired_runs(cutoff_ms: int, dialect: str, limit: int = RUN_BATCH) -> Statement:
    """The oldest finished runs that finished before `cutoff_ms` (index job_finished)."""
    return Statement(
        f"SELECT id FROM job WHERE finished_at IS NOT NULL AND finished_at < $1 AND {_is_final(dialect)} "
        f"AND {_ROOT_DONE} ORDER BY finished_at LIMIT {int(limit)}",
        (cutoff_ms,),
    )


def next_runnable(after: tuple[str, str]) -> Statement:
    """The first (workspace, path) after `after` that has a finished run: one index seek, so
    walking every runnable costs one seek each, not a scan of the table."""
    return Statement(
        "SELECT workspace_id, path FROM job WHERE finished_at IS NOT NULL AND (workspace_id, path) > ($1, $2) "
        "ORDER BY workspace_id, path LIMIT 1",
        after,
    )


def oldest_kept(workspace: str, path: str, keep: int) -> Statement:
    """(finished_at, id) of the `keep`-th newest finished run of a runnable; none when it has
    fewer (covering index job_runnable_finished)."""
    return Statement(
        "SELECT finished_at, id FROM job WHERE workspace_id = $1 AND path = $2 AND finished_at IS NOT NULL "
        "ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET $3",
        (workspace, path, keep - 1),
    )


def surplus_runs(workspace: str, path: str, kept: tuple[int, str], dialect: str, limit: int = RUN_BATCH) -> Statement:
    """The oldest finished runs of a runnable older than the oldest one kept."""
    return Statement(
        "SELECT id FROM job WHERE workspace_id = $1 AND path = $2 AND finished_at IS NOT NULL "
        f"AND (finished_at, id) < ($3, $4) AND {_is_final(dialect)} AND {_ROOT_DONE} "
        f"ORDER BY finished_at, id LIMIT {int(limit)}",
        (workspace, path, *kept),
    )


def line_counts(run_ids: list[str]) -> Statement:
    """(job_id, n): how many log lines each run has (covering index job_log_job)."""
    return Statement(
        f"SELECT job_id, count(*) AS n FROM job_log WHERE job_id IN ({_marks(len(run_ids))}) GROUP BY job_id",
        run_ids,
    )


def delete_runs(run_ids: list[str], dialect: str) -> list[Statement]:
    """Delete the runs of `run_ids` that are finished, then the log lines of those deleted: one
    transaction. A run another process is deleting is skipped (PostgreSQL), and so are its lines."""
    marks = _marks(len(run_ids))
    return [
        Statement(
            f"DELETE FROM job WHERE id IN (SELECT id FROM job WHERE id IN ({marks}) AND {_is_final(dialect)}"
            f"{_skip_locked(dialect)})",
            run_ids,
        ),
        Statement(
            f"DELETE FROM job_log WHERE job_id IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM job WHERE job.id = job_log.job_id)",
            run_ids,
        ),
        Statement(  # and their checkpoints, approvals and events
            f"DELETE FROM job_step WHERE job_id IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM job WHERE job.id = job_step.job_id)",
            run_ids,
        ),
    ]


def delete_some_lines(run_id: str, dialect: str, limit: int = LINE_BATCH) -> Statement:
    """Delete up to `limit` of the oldest log lines of a finished run (one with many lines,
    whose lines go before it)."""
    return Statement(
        "DELETE FROM job_log WHERE id IN (SELECT id FROM job_log WHERE job_id = $1 "
        f"AND EXISTS (SELECT 1 FROM job WHERE id = $1 AND {_is_final(dialect)}) ORDER BY id LIMIT {int(limit)}"
        f"{_skip_locked(dialect)})",
        (run_id,),
    )


def delete_audit(cutoff_ms: int, dialect: str, limit: int = AUDIT_BATCH) -> Statement:
    """Delete up to `limit` of the oldest audit entries written before `cutoff_ms`."""
    return Statement(
        f"DELETE FROM audit_entry WHERE id IN (SELECT id FROM audit_entry WHERE at < $1 ORDER BY at LIMIT {int(limit)}"
        f"{_skip_locked(dialect)})",
        (cutoff_ms,),
    )


# What `flowmill doctor` reads.
RUNS_BY_STATUS = Statement("SELECT status, count(*) AS n FROM job GROUP BY status")
LOG_LINES = Statement("SELECT count(*) FROM job_log")
AUDIT_ENTRIES = Statement("SELECT count(*) FROM audit_entry")
OLDEST_RUN = Statement("SELECT min(created_at) FROM job")
OLDEST_FINISHED = Statement("SELECT min(finished_at) FROM job WHERE finished_at IS NOT NULL")


# -- the batch loop ----------------------------------------------------------------------------


async def prune(db: Database, policy: Policy, now_ms: int, pause_s: float = PAUSE_S) -> Pruned:
    """One pass of every rule of `policy` at time `now_ms`: what it deleted."""
    pruned = Pruned()
    if policy.run_days:
        cutoff = now_ms - policy.run_days * DAY_MS
        await _prune_runs(db, lambda: expired_runs(cutoff, db.dialect), pruned, pause_s)
    if policy.runs_per_script:
        async for workspace, path in _runnables(db):
            kept = await db.fetchrow(*_args(oldest_kept(workspace, path, policy.runs_per_script)))
            if kept is not None:
                boundary = (kept["finished_at"], kept["id"])
                await _prune_runs(db, lambda: surplus_runs(workspace, path, boundary, db.dialect), pruned, pause_s)
    if policy.audit_days:
        cutoff = now_ms - policy.audit_days * DAY_MS
        while True:
            (result,) = await _write(db, [delete_audit(cutoff, db.dialect)], pruned, pause_s)
            pruned.audit_entries += result.rowcount
            if result.rowcount < AUDIT_BATCH:
                break
    return pruned


def _args(statement: Statement) -> tuple[Any, ...]:
    return (statement.sql, *statement.args)


async def _runnables(db: Database) -> AsyncIterator[tuple[str, str]]:
    after = ("", "")
    seen = 0
    while True:
        row = await db.fetchrow(*_args(next_runnable(after)))
        if row is None:
            return
        after = (row["workspace_id"], row["path"])
        yield after
        seen += 1
        if seen % 50 == 0:
            await asyncio.sleep(0)  # many runnables: let requests in between the seeks


async def _prune_runs(db: Database, candidates: Callable[[], Statement], pruned: Pruned, pause_s: float) -> None:
    """Delete what `candidates` selects, a batch at a time, until it selects nothing (or a
    round deletes nothing: what is left is another process's to delete, or not finished)."""
    while True:
        ids = [row["id"] for row in await db.fetch(*_args(candidates()))]
        if not ids:
            return
        counts = {row["job_id"]: int(row["n"]) for row in await db.fetch(*_args(line_counts(ids)))}
        before = pruned.runs
        group: list[str] = []
        lines = 0
        for run_id in ids:
            count = counts.get(run_id, 0)
            if count > LINE_BATCH:  # a run with many lines: its lines first, a batch at a time
                await _delete_lines(db, run_id, pruned, pause_s)
                count = 0
            if group and lines + count > LINE_BATCH:
                await _delete_group(db, group, pruned, pause_s)
                group, lines = [], 0
            group.append(run_id)
            lines += count
        if group:
            await _delete_group(db, group, pruned, pause_s)
        if pruned.runs == before or len(ids) < RUN_BATCH:
            return


async def _write(db: Database, statements: list[Statement], pruned: Pruned, pause_s: float) -> list[Result]:
    """One transaction of pruning, then its pause (see the module's docstring)."""
    started = time.monotonic()
    results = await db.write(*statements)
    pruned.transactions += 1
    await asyncio.sleep(max(pause_s, DUTY * (time.monotonic() - started)) if pause_s else 0)
    return results


async def _delete_group(db: Database, run_ids: list[str], pruned: Pruned, pause_s: float) -> None:
    runs, lines, _ = await _write(db, delete_runs(run_ids, db.dialect), pruned, pause_s)
    pruned.runs += runs.rowcount
    pruned.log_lines += lines.rowcount


async def _delete_lines(db: Database, run_id: str, pruned: Pruned, pause_s: float) -> None:
    while True:
        (result,) = await _write(db, [delete_some_lines(run_id, db.dialect)], pruned, pause_s)
        pruned.log_lines += result.rowcount
        if result.rowcount < LINE_BATCH:
            return


async def compact(db: Database, pause_s: float = PAUSE_S) -> int:
    """Give back the space pruning freed (SQLite: incremental vacuum, then a WAL checkpoint),
    a small step at a time, paused as pruning is; the steps taken. The WAL is truncated only
    when no write waits: a few more tries are given to find such a moment."""
    tries = 0
    for step in range(1, MAINTAIN_STEPS + 1):
        started = time.monotonic()
        upkeep = await db.maintain()
        if not upkeep.more:
            if not upkeep.wal_bytes or tries >= WAL_TRIES:
                return step
            tries += 1
        await asyncio.sleep(max(pause_s, DUTY * (time.monotonic() - started)) if pause_s else 0)
    return MAINTAIN_STEPS


# -- in the background of a serving process ----------------------------------------------------------


class Retention:
    """Prunes every `interval_s` while the server runs (the first pass soon after start), then
    compacts. `clock` gives the time in seconds (the benchmark compresses time with it)."""

    def __init__(self, db: Database, policy: Policy, interval_s: float, clock: Callable[[], float] = time.time,
                 pause_s: float = PAUSE_S) -> None:
        self.db = db
        self.policy = policy
        self.interval_s = interval_s
        self.clock = clock
        self.pause_s = pause_s
        self.totals = Pruned()
        self.passes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background passes."""
        self._task = asyncio.get_running_loop().create_task(self._forever(), name="flowmill-retention")

    async def stop(self) -> None:
        """Stop between two transactions (a write under way completes: it is shielded)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_pass(self) -> Pruned:
        """One pass of the policy at `clock()`, then compaction; what it pruned."""
        started = time.monotonic()
        pruned = await prune(self.db, self.policy, int(self.clock() * 1000), self.pause_s) if self.policy.active else Pruned()
        await compact(self.db, self.pause_s)
        self.passes += 1
        self.totals.add(pruned)
        level = logging.INFO if pruned.anything else logging.DEBUG
        log.log(level, "retention: pruned %d runs, %d log lines, %d audit entries in %d transactions (%.1f s)",
                pruned.runs, pruned.log_lines, pruned.audit_entries, pruned.transactions, time.monotonic() - started)
        return pruned

    async def _forever(self) -> None:
        await asyncio.sleep(min(self.interval_s, FIRST_PASS_S))
        while True:
            try:
                await self.run_pass()
            except Exception:  # a passing database error: the next pass tries again
                log.exception("a retention pass failed")
            await asyncio.sleep(self.interval_s)
