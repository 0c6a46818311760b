"""Waiting without a slot, on a real database: a run that waits for its children or a timer
gives back its slot, holds no task, thread or process while it waits, and is woken by what it
waits for — across a restart too.

No runnable of the product ends a turn WAITING yet (flows and workflows will); these tests
register runners of their own on the real executor and queue, as those will.
"""

from __future__ import annotations

import asyncio
import threading
import time

from app.engine import queue
from app.engine.executor import CancelToken, Executor, Outcome, QueuedJob, now_ms
from app.engine.logs import LogSink
from app.engine.queue import NewRun, Policy, Wait
from tests.unit.test_store import run_on


def _run(job_id: str, kind: str = "task", parent: str | None = None, status: str = "QUEUED") -> NewRun:
    now = now_ms()
    return NewRun(id=job_id, workspace="main", kind=kind, path="f/test/x", args="{}", status=status,
                  trigger_kind="api", trigger_detail="", created_by="test", created_at=now, scheduled_for=now,
                  parent=parent)


async def _until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        await asyncio.sleep(0.02)


def test_a_parent_waiting_on_50_children_completes_with_capacity_2(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        executor = Executor(db, capacity=2)
        turns = 0

        async def parent(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            nonlocal turns
            turns += 1
            children = [f"child-{i:02}" for i in range(50)]
            if turns == 1:  # start the children, then wait for all of them without holding a slot
                await db.write(*(queue.insert(_run(child, parent=job.id)) for child in children))
                for child in children:
                    executor.submit(QueuedJob.new(child, "main", "task", "f/test/x", Policy(), parent=job.id))
                return Outcome("WAITING", wait=Wait(children="all"))
            done = await db.fetchval(f"SELECT count(*) FROM job WHERE parent_job = '{job.id}' AND status = 'SUCCESS'")
            return Outcome("SUCCESS", result=str(done))

        async def child(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            await asyncio.sleep(0.005)
            return Outcome("SUCCESS", result="1")

        executor.register("workflow", parent)
        executor.register("task", child)
        await db.write(queue.insert(_run("parent", kind="workflow")))
        await executor.start()
        done = executor.watch("parent")
        executor.submit(QueuedJob.new("parent", "main", "workflow", "f/test/x", Policy()))
        outcome = await asyncio.wait_for(done, 60)
        assert outcome is not None and outcome.status == "SUCCESS" and outcome.result == "50"
        assert turns == 2  # woken once, when the last child ended
        assert await db.fetchval("SELECT status FROM job WHERE id = 'parent'") == "SUCCESS"
        await executor.stop()

    run_on(backend, scenario)


def test_5000_runs_waiting_on_a_timer_hold_nothing_and_wake_on_time_across_a_restart(backend: str) -> None:
    count = 5000

    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        woke: dict[str, int] = {}
        turns: set[str] = set()
        # Time enough for 5,000 runs to start and wait (a claim and a suspend each: two commits),
        # on a loaded 2-core machine too.
        wake_in = 12_000 if backend == "sqlite" else 24_000
        wake_at = now_ms() + wake_in

        async def sleeper(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            if job.id not in turns:
                turns.add(job.id)
                return Outcome("WAITING", wait=Wait(until_ms=wake_at))
            woke[job.id] = now_ms()
            return Outcome("SUCCESS", result="null")

        ids = [f"sleep-{i:05}" for i in range(count)]
        await db.write(*(queue.insert(_run(job_id)) for job_id in ids))
        first = Executor(db, capacity=8)
        first.register("task", sleeper)
        await first.start()
        threads = threading.active_count()
        for job_id in ids:
            first.submit(QueuedJob.new(job_id, "main", "task", "f/test/x", Policy()))

        async def all_waiting() -> bool:  # written WAITING, and each turn's task ended (just after its commit)
            return (await db.fetchval("SELECT count(*) FROM job WHERE status = 'WAITING'") == count
                    and first.running == 0)

        started = time.monotonic()
        await _until(all_waiting, wake_in / 1000 - 1, "every run waiting")
        print(f"5,000 runs started and waiting in {time.monotonic() - started:.1f} s")
        # What waiting costs: a row and a heap entry; no task, no thread, no process.
        assert first.running == 0 and first.queued() == 0 and len(first.timers) == count
        assert threading.active_count() <= threads
        await first.stop()  # the restart, in the middle of the wait

        second = Executor(db, capacity=8)
        second.register("task", sleeper)
        await second.start()
        assert len(second.timers) == count and second.running == 0

        async def all_done() -> bool:
            return await db.fetchval("SELECT count(*) FROM job WHERE status = 'SUCCESS'") == count

        await _until(all_done, 60, "every run woken and finished")
        # Woken: back in the queue (its `scheduled_for` is when), within 1 s of its time, every one.
        queued_at = [row["scheduled_for"] for row in await db.fetch("SELECT scheduled_for FROM job")]
        late = max(queued_at) - wake_at
        assert min(queued_at) >= wake_at and late < 1000, f"the last run woke {late} ms after its time"
        # And carried out: 5,000 turns through 8 slots take a moment more (how long is the
        # machine's: a generous bound, the 1 s above is the one on time).
        assert min(woke.values()) >= wake_at and max(woke.values()) - wake_at < 30_000
        await second.stop()

    run_on(backend, scenario)


def test_a_timer_that_passed_while_the_server_was_down_wakes_at_once(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        await db.write(queue.insert(_run("late", status="RUNNING")),
                       queue.suspend("late", "WAITING", Wait(until_ms=now_ms() - 60_000)))
        executor = Executor(db, capacity=1)

        async def runner(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            return Outcome("SUCCESS", result="1")

        executor.register("task", runner)
        done = executor.watch("late")
        await executor.start()
        assert (await asyncio.wait_for(done, 5)).status == "SUCCESS"
        await executor.stop()

    run_on(backend, scenario)


def test_a_paused_run_waits_until_woken_and_a_cancel_reaches_a_waiting_one(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        executor = Executor(db, capacity=1)
        turns: dict[str, int] = {}

        async def runner(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            turns[job.id] = turns.get(job.id, 0) + 1
            if turns[job.id] == 1:
                return Outcome("PAUSED")
            return Outcome("SUCCESS", result=str(turns[job.id]))

        executor.register("task", runner)
        await db.write(queue.insert(_run("paused")), queue.insert(_run("doomed")))
        await executor.start()
        for job_id in ("paused", "doomed"):
            executor.submit(QueuedJob.new(job_id, "main", "task", "f/test/x", Policy()))

        async def both_paused() -> bool:
            return await db.fetchval("SELECT count(*) FROM job WHERE status = 'PAUSED'") == 2

        await _until(both_paused, 10, "both runs paused")
        await asyncio.sleep(0.2)
        assert turns == {"paused": 1, "doomed": 1}  # nothing wakes a paused run but a resume
        await db.write(queue.cancel_idle("doomed", '{"name":"Cancelled","message":"no"}', now_ms()))
        done = executor.watch("paused")
        assert await executor.wake([queue.wake("paused", now_ms())], ["paused"]) == 1
        assert (await asyncio.wait_for(done, 5)).result == "2"
        assert await executor.wake([queue.wake("doomed", now_ms())], ["doomed"]) == 0  # cancelled stays cancelled
        assert await db.fetchval("SELECT status FROM job WHERE id = 'doomed'") == "CANCELLED"
        await executor.stop()

    run_on(backend, scenario)


def test_an_approval_decided_during_the_turn_that_waits_for_it_wakes_the_run(backend: str) -> None:
    """The decision finds the run RUNNING (its wake changes nothing); the commit that makes the
    run WAITING looks again (`queue.wake_if_decided`), so the run goes on at once."""
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        executor = Executor(db, capacity=2)
        turns = 0

        async def flow(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            nonlocal turns
            turns += 1
            if turns > 1:
                return Outcome("SUCCESS", result="1")
            now = now_ms()
            await db.write(queue.Statement(
                "INSERT INTO approval (id, workspace_id, job_id, task, message, status, created_at) "
                "VALUES ('gate-1', 'main', $1, 'gate', '', 'PENDING', $2)", (job.id, now)))
            decided = await db.write(  # what a decision writes, while this turn still runs
                queue.Statement("UPDATE approval SET status = 'APPROVED' WHERE id = 'gate-1'", ()),
                queue.wake_for(job.id, "approval", job.id, now))
            assert decided[1].rowcount == 0
            return Outcome("WAITING", wait=Wait(approval=job.id), wakes=(queue.wake_if_decided(job.id, ("gate-1",), now),))

        executor.register("flow", flow)
        await db.write(queue.insert(_run("gated", kind="flow")))
        await executor.start()
        executor.submit(QueuedJob.new("gated", "main", "flow", "f/test/x", Policy()))

        async def done() -> bool:
            return await db.fetchval("SELECT status FROM job WHERE id = 'gated'") == "SUCCESS"

        await _until(done, 10, "the run going on after the decision")
        assert turns == 2
        await executor.stop()

    run_on(backend, scenario)
