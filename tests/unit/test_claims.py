"""The statements several processes on one PostgreSQL database rely on, raced for real: a
batch claim (`FOR UPDATE SKIP LOCKED`) takes each run once, the recovery of a dead process is
done by exactly one of those who try, heartbeats say when a process was taken for dead, and
the notifications arrive. PostgreSQL only: SQLite has one process per database."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

import pytest

from app.engine import queue
from app.engine.executor import CancelToken, Executor, Outcome, QueuedJob, now_ms
from app.engine.logs import LogSink
from app.engine.queue import NewRun, Policy, Wait
from app.engine.workers import Workers, lost_error
from app.store.postgres import PostgresDatabase
from tests.unit.test_store import run_with_settings


@pytest.fixture
def pg(backend: str) -> str:
    if backend != "postgres":
        pytest.skip("several processes share a database on PostgreSQL only")
    return backend


def _run(job_id: str, status: str = "QUEUED", worker: str = "", attempts: int = 1, at: int | None = None,
         priority: int = 0) -> NewRun:
    now = now_ms() if at is None else at
    return NewRun(id=job_id, workspace="main", kind="script", path="f/test/x", args="{}", status=status,
                  trigger_kind="api", trigger_detail="", created_by="test", created_at=now, scheduled_for=now,
                  policy=Policy(max_attempts=attempts, priority=priority), worker=worker)


def test_concurrent_batch_claims_take_every_run_exactly_once(pg: str) -> None:
    count = 3000

    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        ids = [f"run-{i:05}" for i in range(count)]
        for start in range(0, count, 500):
            await db.write(*(queue.insert(_run(job_id, priority=i % 3)) for i, job_id in enumerate(ids[start:start + 500])))
        # Four "processes" (pools of their own), each with three claimers at once.
        pools = [PostgresDatabase(settings.database_url, max_size=4) for _ in range(4)]
        for pool in pools:
            await pool.open()
        taken: collections.Counter[str] = collections.Counter()
        by: dict[str, str] = {}

        async def claimer(pool: PostgresDatabase, worker: str) -> None:
            while True:
                rows = (await pool.write(queue.claim_due(worker, now_ms(), 17, "postgres")))[0].rows
                if not rows:
                    return
                for row in rows:
                    taken[row["id"]] += 1
                    by[row["id"]] = worker

        try:
            await asyncio.gather(*(claimer(pool, f"w{p}") for p, pool in enumerate(pools) for _ in range(3)))
        finally:
            for pool in pools:
                await pool.close()
        assert sorted(taken) == ids, "every run claimed"
        assert max(taken.values()) == 1, [job_id for job_id, n in taken.items() if n > 1][:5]
        assert len(set(by.values())) == 4  # all of them got some
        rows = await db.fetch("SELECT id, status, worker FROM job")
        assert all(row["status"] == "RUNNING" and row["worker"] == by[row["id"]] for row in rows)

    run_with_settings(pg, scenario)


def test_a_claim_takes_due_runs_by_priority_and_leaves_the_rest(pg: str) -> None:
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        now = now_ms()
        await db.write(queue.insert(_run("low", at=now - 10)), queue.insert(_run("high", at=now - 5, priority=5)),
                       queue.insert(_run("later", at=now + 60_000)), queue.insert(_run("busy", status="RUNNING", worker="x")))
        rows = (await db.write(queue.claim_due("me", now, 1, "postgres")))[0].rows
        assert [row["id"] for row in rows] == ["high"]
        rows = (await db.write(queue.claim_due("me", now, 10, "postgres")))[0].rows
        assert [row["id"] for row in rows] == ["low"]
        assert queue.scheduled(rows[0]).policy.max_attempts == 1
        assert await db.fetchval("SELECT status FROM job WHERE id = 'later'") == "QUEUED"

    run_with_settings(pg, scenario)


def test_a_claim_takes_no_more_of_a_key_than_its_concurrency_limit_leaves_room_for(pg: str) -> None:
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        now = now_ms()

        def keyed(job_id: str, status: str = "QUEUED", window_s: float | None = None, key: str = "k") -> queue.Statement:
            run = _run(job_id, status, worker="x" if status == "RUNNING" else "", at=now - 100)
            return queue.insert(dataclasses.replace(run, policy=Policy(
                concurrency_key=key, concurrency_limit=2, concurrency_window_s=window_s)))

        await db.write(keyed("running", "RUNNING"), *(keyed(f"k{i}") for i in range(10)),
                       *(keyed(f"w{i}", window_s=60, key="w") for i in range(5)), queue.insert(_run("free", at=now)))
        rows = (await db.write(queue.claim_due("me", now, 16, "postgres")))[0].rows
        taken = sorted(row["id"] for row in rows)
        # One of "k" runs already: one more fits; two of "w" within its window; the free run.
        assert taken == ["free", "k0", "w0", "w1"], taken
        assert await db.fetchval("SELECT COUNT(*) FROM job WHERE status = 'QUEUED'") == 12
        assert (await db.write(queue.claim_due("me", now, 16, "postgres")))[0].rows == []
        await db.write(queue.finish("running", "SUCCESS", "1", None, now_ms(), worker="x"))
        rows = (await db.write(queue.claim_due("me", now_ms(), 16, "postgres")))[0].rows
        assert [row["id"] for row in rows] == ["k1"]  # the window of "w" is still full

    run_with_settings(pg, scenario)


def test_a_dead_process_is_recovered_once_whoever_tries(pg: str) -> None:
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        now = now_ms()
        await db.write(queue.register_worker("dead", now - 60_000), queue.register_worker("alive", now))
        await db.write(
            queue.insert(_run("retried", "RUNNING", "dead", attempts=3)), queue.insert(_run("spent", "RUNNING", "dead")),
            queue.insert(_run("asked", "RUNNING", "dead", attempts=3)), queue.insert(_run("theirs", "RUNNING", "alive")),
            queue.insert(_run("old", "RUNNING", "gone:1", at=now - 60_000)), queue.insert(_run("young", "RUNNING", "gone:2")),
        )
        await db.write(queue.request_cancel("asked"))
        pools = [PostgresDatabase(settings.database_url, max_size=2) for _ in range(6)]
        for pool in pools:
            await pool.open()
        dead = await queue.RunQueue(db).dead_workers(now - 10_000)
        assert dead == ["dead"]
        try:
            results = await asyncio.gather(*(
                pool.write(queue.recover_dead_worker(worker, now - 10_000, now, '{"name":"WorkerLost"}'))
                for pool in pools for worker in dead
            ))
        finally:
            for pool in pools:
                await pool.close()
        winners = [result[0].rows for result in results if result[0].rows]
        assert len(winners) == 1, "exactly one recovers"
        assert sorted((row["id"], row["status"]) for row in winners[0]) == [
            ("asked", "CANCELLED"), ("retried", "QUEUED"), ("spent", "FAILED")]
        rows = {row["id"]: row for row in await db.fetch("SELECT id, status, attempt, error, worker FROM job")}
        assert rows["retried"]["attempt"] == 2 and rows["retried"]["worker"] == ""
        assert rows["spent"]["error"] == '{"name":"WorkerLost"}'
        assert rows["theirs"]["status"] == "RUNNING"
        assert await db.fetchval("SELECT count(*) FROM worker WHERE id = 'dead'") == 0
        # A process that never registered: its run is recovered once it is DEAD_AFTER old, not before.
        recovered = (await db.write(queue.recover_unregistered(now - 10_000, now, '{"name":"WorkerLost"}')))[0].rows
        assert [(row["id"], row["status"]) for row in recovered] == [("old", "FAILED")]
        assert rows["young"]["status"] == "RUNNING"
        # The dead process comes back: its outcomes are not written over what its runs became...
        late = await db.write(queue.finish("spent", "SUCCESS", "1", None, now_ms(), worker="dead"),
                              queue.retry("retried", 3, now_ms(), None, worker="dead"))
        assert [result.rowcount for result in late] == [0, 0]
        assert await db.fetchval("SELECT status FROM job WHERE id = 'spent'") == "FAILED"
        assert (await db.write(queue.finish("theirs", "SUCCESS", "1", None, now_ms(), worker="alive")))[0].rowcount == 1
        # ...and its heartbeat says it was taken for dead.
        assert (await db.write(queue.heartbeat("dead", now_ms())))[0].rowcount == 0
        assert (await db.write(queue.heartbeat("alive", now_ms())))[0].rowcount == 1

    run_with_settings(pg, scenario)


def test_a_recent_heartbeat_saves_a_process_from_recovery(pg: str) -> None:
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        now = now_ms()
        await db.write(queue.register_worker("slow", now - 60_000), queue.insert(_run("r", "RUNNING", "slow")))
        await db.write(queue.heartbeat("slow", now))  # just in time
        assert (await db.write(queue.recover_dead_worker("slow", now - 10_000, now, "{}")))[0].rows == []
        assert await db.fetchval("SELECT status FROM job WHERE id = 'r'") == "RUNNING"

    run_with_settings(pg, scenario)


def test_notifications_reach_the_listeners_of_the_same_schema(pg: str) -> None:
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        heard: list[tuple[str, str]] = []
        got = asyncio.Event()

        def on(name: str):  # type: ignore[no-untyped-def]
            def handler(payload: str) -> None:
                heard.append((name, payload))
                got.set()
            return handler

        listener = await db.listen({queue.QUEUE_CHANNEL: on("queue"), queue.CANCEL_CHANNEL: on("cancel")}, queue.channel)
        try:
            await db.write(queue.insert(_run("r", "RUNNING", "w")), queue.request_cancel("r"),
                           *queue.announce_cancel("r", "stop it", "postgres"))
            await asyncio.wait_for(got.wait(), 5)
            got.clear()
            await db.write(queue.insert(_run("q")), *queue.announce("postgres"))
            await asyncio.wait_for(got.wait(), 5)
        finally:
            await listener.close()
        assert heard == [("cancel", "r stop it"), ("queue", "")]

    run_with_settings(pg, scenario)


def test_a_live_process_takes_over_what_a_dead_one_left_waiting_and_running(pg: str) -> None:
    """Through `Workers` and a real executor: the dead process's child run is FAILED
    WorkerLost and its waiting parent woken and carried here; a timer it set, overdue, is
    woken and carried here; a run queued by nobody here is claimed at once on its NOTIFY."""
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        now = now_ms()
        await db.write(queue.register_worker("dead", now - 60_000),
                       queue.insert(_run("parent", "RUNNING", "dead")), queue.insert(_run("timer", "RUNNING", "dead")))
        await db.write(queue.suspend("parent", "WAITING", Wait(children="all")),
                       queue.suspend("timer", "WAITING", Wait(until_ms=now - 5_000)))
        await db.write(queue.insert(dataclasses.replace(_run("child", "RUNNING", "dead"), parent="parent")))
        executor = Executor(db, capacity=4)
        turns: collections.Counter[str] = collections.Counter()

        async def runner(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            turns[job.id] += 1
            return Outcome("SUCCESS", result="1")

        executor.register("script", runner)
        workers = Workers(db, executor)
        await workers.join()  # recovers the dead process's runs
        # The timer was set by the dead process: not in this one's heap (`Executor.start` reads
        # them all, so empty it here), the poll wakes it.
        assert await db.fetchval("SELECT error FROM job WHERE id = 'child'") == lost_error()
        await executor.start()
        executor.timers.stop()
        await workers.start()
        try:
            await db.write(queue.insert(_run("fresh")), *queue.announce("postgres"))

            async def done() -> bool:
                rows = dict(await db.fetch("SELECT id, status FROM job"))
                return all(rows[job_id] == "SUCCESS" for job_id in ("parent", "timer", "fresh"))

            deadline = asyncio.get_running_loop().time() + 5
            while not await done():
                assert asyncio.get_running_loop().time() < deadline, dict(await db.fetch("SELECT id, status FROM job"))
                await asyncio.sleep(0.05)
            assert turns == {"parent": 1, "timer": 1, "fresh": 1}
            assert await db.fetchval("SELECT count(*) FROM worker WHERE id = 'dead'") == 0
        finally:
            await workers.stop()
            await executor.stop()
            await workers.leave()
        assert await db.fetchval("SELECT count(*) FROM worker") == 0

    run_with_settings(pg, scenario)

