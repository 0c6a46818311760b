"""Retention's batch loop on real databases (a SQLite file, a PostgreSQL schema): what each rule
prunes and keeps, batch sizes, concurrent pruners, and SQLite giving the space back."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from app.config import load_settings
from app.engine import retention
from app.engine.retention import DAY_MS, Policy, Retention, compact, prune
from app.store.base import Database, Statement
from app.store.migrate import prepare
from app.store.sqlite import SQLiteDatabase
from tests.support import database_url, drop_schema
from tests.unit.test_store import run_on

NOW = 1_800_000_000_000  # epoch ms; rows are placed in time around it
FINISHED = ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT")
UNFINISHED = ("QUEUED", "RUNNING", "WAITING", "PAUSED")
OFF = Policy(0, 0, 0)


async def add_runs(db: Database, runs: list[dict[str, Any]], lines: int = 3) -> None:
    """Insert runs (id, status, finished_at; optional path, workspace, root, created_at) and
    `lines` log lines each, a few hundred rows a statement."""
    for start in range(0, len(runs), 100):
        chunk = runs[start:start + 100]
        values, args = [], []
        for run in chunk:
            n = len(args)
            values.append("(" + ", ".join(f"${n + i}" for i in range(1, 9)) + ", '{}', 'script', 'api', 'test')")
            finished = run.get("finished_at")
            args += [run["id"], run.get("workspace", "main"), run.get("path", "f/a/b"), run["status"],
                     run.get("created_at", finished or NOW), run.get("created_at", finished or NOW), finished,
                     run.get("root")]
        statements = [Statement(
            "INSERT INTO job (id, workspace_id, path, status, created_at, scheduled_for, finished_at, root_job, "
            f"args, kind, trigger_kind, created_by) VALUES {', '.join(values)}", args)]
        log_rows = [(run["id"], i) for run in chunk for i in range(run.get("lines", lines))]
        for at in range(0, len(log_rows), 300):
            part = log_rows[at:at + 300]
            marks = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, 'stdout', ${3 * i + 3})" for i in range(len(part)))
            flat: list[Any] = []
            for job_id, i in part:
                flat += [job_id, NOW, f"line {i} of {job_id}"]
            statements.append(Statement(f"INSERT INTO job_log (job_id, ts, stream, line) VALUES {marks}", flat))
        await db.write(*statements)


async def ids(db: Database) -> set[str]:
    return {row["id"] for row in await db.fetch("SELECT id FROM job")}


async def logged(db: Database) -> dict[str, int]:
    return {row["job_id"]: int(row["n"]) for row in await db.fetch("SELECT job_id, count(*) AS n FROM job_log GROUP BY job_id")}


def test_the_age_rule_prunes_finished_runs_with_their_lines_and_nothing_unfinished(backend: str) -> None:
    async def scenario(db: Database) -> None:
        old, recent = NOW - 40 * DAY_MS, NOW - 2 * DAY_MS
        runs = [{"id": f"old-{s}", "status": s, "finished_at": old} for s in FINISHED]
        runs += [{"id": f"recent-{s}", "status": s, "finished_at": recent} for s in FINISHED]
        # Unfinished runs, however old, stay: without finished_at, as they are, and even with one.
        runs += [{"id": f"open-{s}", "status": s, "created_at": old} for s in UNFINISHED]
        runs += [{"id": f"odd-{s}", "status": s, "created_at": old, "finished_at": old} for s in UNFINISHED]
        await add_runs(db, runs)
        pruned = await prune(db, Policy(30, 0, 0), NOW, pause_s=0)
        assert (pruned.runs, pruned.log_lines) == (4, 12)
        left = await ids(db)
        assert left == {r["id"] for r in runs} - {f"old-{s}" for s in FINISHED}
        assert set(await logged(db)) == left  # every line of a pruned run went, no other
        assert all(n == 3 for n in (await logged(db)).values())
        assert (await prune(db, Policy(30, 0, 0), NOW, pause_s=0)).runs == 0

    run_on(backend, scenario)


def test_the_count_rule_keeps_the_newest_finished_runs_of_each_runnable(backend: str) -> None:
    async def scenario(db: Database) -> None:
        runs = [{"id": f"a-{i:02d}", "status": "SUCCESS", "finished_at": NOW - i * 1000} for i in range(10)]
        runs += [{"id": f"a-open-{i}", "status": "QUEUED", "created_at": NOW - 10**9} for i in range(2)]
        runs += [{"id": f"b-{i}", "status": "FAILED", "path": "f/other", "finished_at": NOW - DAY_MS} for i in range(2)]
        # the same path in another workspace is another runnable
        runs += [{"id": f"w-{i}", "status": "SUCCESS", "workspace": "ops", "finished_at": NOW - i} for i in range(5)]
        await add_runs(db, runs)
        pruned = await prune(db, Policy(0, 3, 0), NOW, pause_s=0)
        assert pruned.runs == 7 + 2
        assert await ids(db) == {"a-00", "a-01", "a-02", "a-open-0", "a-open-1", "b-0", "b-1", "w-0", "w-1", "w-2"}
        assert set(await logged(db)) == await ids(db)

    run_on(backend, scenario)


def test_a_finished_run_whose_root_still_runs_is_kept(backend: str) -> None:
    async def scenario(db: Database) -> None:
        old = NOW - 90 * DAY_MS
        await add_runs(db, [
            {"id": "root-waiting", "status": "WAITING", "created_at": old},
            {"id": "child-of-waiting", "status": "SUCCESS", "finished_at": old, "root": "root-waiting"},
            {"id": "root-done", "status": "SUCCESS", "finished_at": old},
            {"id": "child-of-done", "status": "SUCCESS", "finished_at": old, "root": "root-done"},
            {"id": "child-of-gone", "status": "SUCCESS", "finished_at": old, "root": "never-was"},
        ])
        await prune(db, Policy(30, 0, 0), NOW, pause_s=0)
        assert await ids(db) == {"root-waiting", "child-of-waiting"}

    run_on(backend, scenario)


def test_audit_entries_go_at_their_own_age_and_zero_turns_each_rule_off(backend: str) -> None:
    async def scenario(db: Database) -> None:
        for at in (NOW - 400 * DAY_MS, NOW - 20 * DAY_MS, NOW - DAY_MS):
            await db.execute("INSERT INTO audit_entry (at, action, target, outcome, status, request_id) "
                             "VALUES ($1, 'x.y', 't', 'success', 200, 'r')", at)
        await add_runs(db, [{"id": f"r{i}", "status": "SUCCESS", "finished_at": NOW - 100 * DAY_MS - i} for i in range(5)])
        assert (await prune(db, OFF, NOW, pause_s=0)).anything is False
        assert len(await ids(db)) == 5
        assert (await prune(db, Policy(0, 0, 365), NOW, pause_s=0)).audit_entries == 1
        assert len(await ids(db)) == 5  # runs have rules of their own, off here
        assert (await prune(db, Policy(0, 0, 10), NOW, pause_s=0)).audit_entries == 1
        assert await db.fetchval("SELECT count(*) FROM audit_entry") == 1

    run_on(backend, scenario)


def test_every_transaction_is_small_and_a_run_with_many_lines_goes_in_several(backend: str) -> None:
    async def scenario(db: Database) -> None:
        old = NOW - 40 * DAY_MS
        runs = [{"id": f"r{i:04d}", "status": "SUCCESS", "finished_at": old + i} for i in range(1200)]
        runs[500]["lines"] = 1500  # a chatty run, in the middle
        runs += [{"id": "recent", "status": "SUCCESS", "finished_at": NOW}]
        await add_runs(db, runs)
        for i in range(1200):
            await db.execute("INSERT INTO audit_entry (at, action, target, outcome, status, request_id) "
                             "VALUES ($1, 'x.y', 't', 'success', 200, 'r')", old + i)
        sizes: list[int] = []
        write = db.write

        async def counting(*statements: Statement, durable: bool = True):  # type: ignore[no-untyped-def]
            results = await write(*statements, durable=durable)
            sizes.append(sum(r.rowcount for r in results))
            return results

        db.write = counting  # type: ignore[method-assign]
        pruned = await prune(db, Policy(30, 0, 30), NOW, pause_s=0)
        db.write = write  # type: ignore[method-assign]
        assert (pruned.runs, pruned.log_lines, pruned.audit_entries) == (1200, 1199 * 3 + 1500, 1200)
        assert max(sizes) <= 500, sizes
        assert len(sizes) == pruned.transactions >= (1200 * 4 + 1500 + 1200) // 500
        assert await ids(db) == {"recent"} and set(await logged(db)) == {"recent"}

    run_on(backend, scenario)


def test_two_pruners_at_once_delete_each_run_once(backend: str) -> None:
    """On PostgreSQL two processes' pools (SKIP LOCKED keeps them apart); on SQLite two passes
    through the one writer. Nothing fails, nothing is deleted twice or left."""
    with tempfile.TemporaryDirectory() as home:
        url, schema = database_url(backend, Path(home))
        settings = load_settings({"FLOWMILL_HOME": home, "FLOWMILL_DATABASE_URL": url})

        async def main() -> None:
            first = await prepare(settings)
            second = await prepare(settings) if backend == "postgres" else first
            try:
                old = NOW - 40 * DAY_MS
                await add_runs(first, [{"id": f"r{i:05d}", "status": "FAILED", "finished_at": old + i} for i in range(3000)])
                results = await asyncio.gather(prune(first, Policy(30, 0, 0), NOW, pause_s=0),
                                               prune(second, Policy(30, 0, 0), NOW, pause_s=0))
                assert sum(r.runs for r in results) == 3000
                assert sum(r.log_lines for r in results) == 9000
                assert await first.fetchval("SELECT count(*) FROM job") == 0
                assert await first.fetchval("SELECT count(*) FROM job_log") == 0
            finally:
                if second is not first:
                    await second.close()
                await first.close()

        try:
            asyncio.run(main())
        finally:
            if schema:
                drop_schema(schema)


def test_the_background_passes_prune_and_stop(backend: str) -> None:
    async def scenario(db: Database) -> None:
        await add_runs(db, [{"id": f"r{i}", "status": "SUCCESS", "finished_at": NOW - 40 * DAY_MS} for i in range(50)])
        keeper = Retention(db, Policy(30, 0, 0), interval_s=0.05, clock=lambda: NOW / 1000, pause_s=0)
        keeper.start()
        try:
            for _ in range(200):
                if keeper.passes >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await keeper.stop()
        assert keeper.passes >= 2 and keeper.totals.runs == 50
        assert await ids(db) == set()

    run_on(backend, scenario)


# -- SQLite keeps small ------------------------------------------------------------------------------


def _file(path: Path) -> tuple[int, int]:
    wal = Path(f"{path}-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def test_sqlite_gives_the_space_of_pruned_runs_back_and_empties_its_wal() -> None:
    async def scenario(db: Database) -> None:
        assert isinstance(db, SQLiteDatabase) and db.incremental
        await add_runs(db, [{"id": f"r{i:05d}", "status": "SUCCESS", "finished_at": NOW - 40 * DAY_MS + i}
                            for i in range(20_000)], lines=4)
        await compact(db, pause_s=0)
        full, _ = _file(db.path)
        assert full > 8 * 2**20
        await prune(db, Policy(30, 0, 0), NOW, pause_s=0)
        steps = await compact(db, pause_s=0)
        size, wal = _file(db.path)
        assert steps > 1  # a little at a time
        assert size < full / 5, (size, full)
        assert wal == 0
        assert await db.fetchval("PRAGMA freelist_count") == 0

    run_on("sqlite", scenario)


def test_sqlite_plans_use_the_retention_indexes_without_statistics() -> None:
    """A fresh file has no ANALYZE statistics: the planner then took `status IN (...)` from
    job_queue, walking every finished run for each batch (and sorting the age rule's candidates)."""
    from app.store.sqlite import translate

    async def scenario(db: Database) -> None:
        await add_runs(db, [{"id": f"r{i:05d}", "status": "SUCCESS", "finished_at": NOW - i * 1000, "path": f"f/p{i % 7}"}
                            for i in range(2000)], lines=1)
        assert await db.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'") == 0
        run_ids = [f"r{i:05d}" for i in range(retention.RUN_BATCH)]
        statements = [retention.expired_runs(NOW, "sqlite"), retention.next_runnable(("", "")),
                      retention.oldest_kept("main", "f/p1", 100), retention.surplus_runs("main", "f/p1", (NOW, "z"), "sqlite"),
                      retention.line_counts(run_ids), *retention.delete_runs(run_ids, "sqlite"),
                      retention.delete_some_lines("r00001", "sqlite"), retention.delete_audit(NOW, "sqlite")]
        for statement in statements:
            plan = " / ".join(row[3] for row in await db.fetch("EXPLAIN QUERY PLAN " + translate(statement.sql), *statement.args))
            assert "job_queue" not in plan and "TEMP B-TREE" not in plan and not plan.startswith("SCAN"), (statement.sql, plan)

    run_on("sqlite", scenario)


def test_batches_are_as_documented() -> None:
    assert retention.RUN_BATCH + retention.LINE_BATCH <= 500
    assert retention.AUDIT_BATCH <= 500
