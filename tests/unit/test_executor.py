"""The executor on a real database: runs nobody waits for yield to a burst of requests, runs
somebody waits for do not, and every run ends recorded."""

from __future__ import annotations

import asyncio
import time

from app.engine.executor import TRICKLE_S, CancelToken, Executor, Outcome, QueuedJob
from app.engine.logs import LogSink
from app.services import build_services
from tests.unit.test_store import run_on, run_with_settings

INSERT_JOB = (
    "INSERT INTO job (id, workspace_id, kind, path, args, status, trigger_kind, trigger_detail, request_id, created_by, "
    "created_at, scheduled_for, priority, attempt, cancel_requested, worker) "
    "VALUES ($1, 'main', 'script', 'f/test/x', '{}', $2, 'api', '', '', 'test', 0, 0, 0, 1, 0, '')"
)


def test_runs_nobody_waits_for_yield_to_a_burst_of_requests(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        started: dict[str, float] = {}

        async def run(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            started[job.id] = time.monotonic()
            sink.note("ran")
            return Outcome("SUCCESS", result="1")

        background = [f"bg-{i}" for i in range(20)]
        await db.write(*(db_statement(job_id, "QUEUED") for job_id in background), db_statement("fg", "RUNNING"))
        executor = Executor(db, capacity=4)
        executor.register("script", run)
        await executor.start()
        burst_ends = time.monotonic() + 0.8

        async def burst() -> None:  # 1,500 requests a second
            while time.monotonic() < burst_ends:
                for _ in range(15):
                    executor.request_started()
                await asyncio.sleep(0.01)

        requests = asyncio.create_task(burst())
        await asyncio.sleep(0.25)  # the rate is judged over whole windows
        for job_id in background:
            executor.submit(QueuedJob(job_id, "main", "f/test/x"))
        asked = time.monotonic()
        done = executor.watch("fg")
        executor.submit(QueuedJob("fg", "main", "f/test/x", claimed=True))  # somebody waits for it
        assert (await asyncio.wait_for(done, 5)).status == "SUCCESS"
        assert started["fg"] - asked < 0.1  # at once, burst or not
        await requests
        during = sorted(at for job_id, at in started.items() if job_id in background and at < burst_ends)
        assert 1 <= len(during) <= 0.55 / TRICKLE_S + 2  # a trickle: the queue moves, slowly
        assert all(later - earlier >= TRICKLE_S * 0.8 for earlier, later in zip(during, during[1:]))
        deadline = time.monotonic() + 5
        while await db.fetchval("SELECT count(*) FROM job WHERE status = 'SUCCESS'") < 21 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await db.fetchval("SELECT count(*) FROM job WHERE status = 'SUCCESS'") == 21  # all of them, after the burst
        assert await db.fetchval("SELECT count(*) FROM job_log WHERE line = '[flowmill] ran'") == 21
        await executor.stop()

    run_on(backend, scenario)


def test_at_most_capacity_runs_at_once_and_a_queued_cancel_never_starts(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        running = peak = 0
        ran: list[str] = []

        async def run(job: QueuedJob, sink: LogSink, cancel: CancelToken) -> Outcome:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            ran.append(job.id)
            await asyncio.sleep(0.02)
            running -= 1
            return Outcome("SUCCESS", result="1")

        ids = [f"j-{i}" for i in range(12)]
        await db.write(*(db_statement(job_id, "QUEUED") for job_id in ids))
        executor = Executor(db, capacity=3)
        executor.register("script", run)
        await executor.start()
        for job_id in ids:
            executor.submit(QueuedJob(job_id, "main", "f/test/x"))
        await db.execute("UPDATE job SET status = 'CANCELLED' WHERE id = 'j-11'")
        executor.cancel("j-11", "not wanted")
        last = executor.watch("j-10")
        await asyncio.wait_for(last, 5)
        await asyncio.sleep(0.05)
        assert peak == 3 and "j-11" not in ran and len(ran) == 11
        assert await db.fetchval("SELECT status FROM job WHERE id = 'j-11'") == "CANCELLED"
        await executor.stop()

    run_on(backend, scenario)


def db_statement(job_id: str, status: str):  # type: ignore[no-untyped-def]
    from app.store.base import Statement

    return Statement(INSERT_JOB, (job_id, status))


def test_a_restart_picks_up_every_queued_run_page_by_page(backend: str) -> None:
    """A burst and a crash may leave more runs queued than one read returns: all are picked up."""
    async def scenario(settings, db) -> None:  # type: ignore[no-untyped-def]
        await db.write(*(db_statement(f"q-{i:02}", "QUEUED") for i in range(23)))
        jobs = (await build_services(settings, db)).jobs  # its executor not started: nothing runs
        await jobs._pick_up_queued(page=10)
        assert jobs.executor.queued() == 23
        await jobs._pick_up_queued(page=10)
        assert jobs.executor.queued() == 23  # the runs it knows are not queued twice

    run_with_settings(backend, scenario)
