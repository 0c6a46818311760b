"""Several processes serving one PostgreSQL database: heartbeats, recovery, claims, cancels.

Every serving process is a row of `worker` (its id is `Executor.worker_id`, unique per
process start) and writes its heartbeat every `HEARTBEAT_S`; a clean stop deletes the row
once its runs are recorded. A process whose heartbeat is older than `DEAD_AFTER_S` is dead:
any live process recovers its RUNNING runs — queued again for their next attempt where their
policy allows one, else FAILED with `WorkerLost` — in the one statement that deletes its row,
so that of two processes trying at once exactly one does (`queue.recover_dead_worker`). Runs
of a process that never registered (a version before heartbeats) are recovered the same way
once they have been RUNNING for `DEAD_AFTER_S`. A run is thus recovered between
`DEAD_AFTER_S - HEARTBEAT_S` and `DEAD_AFTER_S + HEARTBEAT_S` after its process died.

Runs queued by other processes are claimed here in batches of at most the free capacity
(`queue.claim_due`, `FOR UPDATE SKIP LOCKED`): the claim is what makes a run carried once.
A process is told of new runs by a NOTIFY on `flowmill_queue` (written with their commit),
of a freed slot by the executor, and otherwise looks every `POLL_S`, which also wakes timers
left overdue (their process gone) and catches lost notifications.

A cancel answered by another process reaches the one carrying the run by a NOTIFY on
`flowmill_cancel` (`<run id> <reason>`) at once, and by `cancel_requested = 1`, read every
`POLL_S`, should the notification be lost: within 2 s either way.

SQLite has one process per database (`app.server.owner`): none of this runs there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from app.engine import queue
from app.engine.executor import Executor, QueuedJob, now_ms
from app.engine.queue import FINAL
from app.store.base import StoreError
from app.store.postgres import Listener, PostgresDatabase

log = logging.getLogger("flowmill.workers")

HEARTBEAT_S = 2.0  # how often a process says it is alive
DEAD_AFTER_S = 10.0  # a process silent this long is dead: its runs are recovered
POLL_S = 1.0  # the fallback look for runs to claim, cancels asked and timers overdue
CLAIM_BATCH = 100  # runs claimed in one statement at most


def lost_error() -> str:
    return msgspec.json.encode({"name": "WorkerLost", "message": (
        f"the server process carrying this run stopped (no heartbeat for {DEAD_AFTER_S:g} s)"
    )}).decode()


class Workers:
    """This process among those serving one PostgreSQL database."""

    def __init__(self, db: PostgresDatabase, executor: Executor) -> None:
        self.db = db
        self.executor = executor
        self.id = executor.worker_id
        self._wanted = asyncio.Event()  # something may be there to claim
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self.recovered = 0  # runs of dead processes recovered here (for tests and logs)

    # -- life ------------------------------------------------------------------------------------

    async def join(self) -> None:
        """Register (before this process claims or inserts any run), then recover the runs of
        processes that are dead already."""
        await self.db.write(queue.register_worker(self.id, now_ms()))
        await self.recover()

    async def start(self) -> None:
        """Listen, heartbeat, claim and watch for cancels (after the executor started)."""
        self._listener = await self.db.listen(
            {queue.QUEUE_CHANNEL: self._queued, queue.CANCEL_CHANNEL: self._cancelled}, queue.channel)
        self.executor.on_free = self._wanted.set
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(HEARTBEAT_S, self._beat)),
                       loop.create_task(self._every(POLL_S, self._poll)),
                       loop.create_task(self._claiming())]
        self._wanted.set()

    async def stop(self) -> None:
        """Stop claiming and listening (the executor stops next, then `leave`)."""
        self.executor.on_free = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._listener is not None:
            await self._listener.close()

    async def leave(self) -> None:
        """A clean stop: this process's row goes (its runs are recorded by then)."""
        await self.db.write(queue.unregister_worker(self.id))

    @staticmethod
    async def _every(period_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await step()
            except (StoreError, OSError) as error:  # keep going through a passing database error
                log.warning("%s failed: %s", step.__name__, error)

    # -- heartbeats and recovery -------------------------------------------------------------------

    async def _beat(self) -> None:
        if not (await self.db.write(queue.heartbeat(self.id, now_ms())))[0].rowcount:
            # Silent past DEAD_AFTER_S (a stalled loop, the database out of reach): the others
            # recovered what this process was carrying. Be a live worker again from now on.
            log.error("this process was taken for dead (no heartbeat for %g s); its runs were recovered "
                      "by another", DEAD_AFTER_S)
            await self.db.write(queue.register_worker(self.id, now_ms()))
        if self._listener is not None and await self._listener.ensure():
            self._wanted.set()  # notifications may have been missed while it was down
        await self.recover()

    async def recover(self) -> int:
        """Recover the runs of dead processes (see the module's docstring); how many."""
        now = now_ms()
        dead_before = now - int(DEAD_AFTER_S * 1000)
        error = lost_error()
        statements = [queue.recover_dead_worker(worker, dead_before, now, error)
                      for worker in await self.executor.runs.dead_workers(dead_before)]
        statements.append(queue.recover_unregistered(dead_before, now, error))
        # One transaction each: a failure (or a lost race) for one leaves the others as they are.
        rows = [row for statement in statements for row in (await self.db.write(statement))[0].rows]
        if not rows:
            return 0
        self.recovered += len(rows)
        queued = [row["id"] for row in rows if row["status"] == "QUEUED"]
        log.warning("recovered %d runs of a process that stopped: %d queued again, %d failed or cancelled",
                    len(rows), len(queued), len(rows) - len(queued))
        parents = sorted({row["parent_job"] for row in rows if row["status"] in FINAL and row["parent_job"]})
        if parents:  # a parent waiting on a recovered child is woken as by any child's end
            await self.executor.wake([queue.wake_parent(parent, now) for parent in parents], parents)
        if queued:
            await self.db.write(*queue.announce(self.db.dialect))
        return len(rows)

    # -- claiming ------------------------------------------------------------------------------------

    def _queued(self, payload: str) -> None:
        self._wanted.set()

    async def _claiming(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.claim()
            except (StoreError, OSError) as error:
                log.warning("claiming runs failed: %s", error)
                await asyncio.sleep(POLL_S)

    async def claim(self) -> int:
        """Claim due runs for the free slots of this process and hand them to the executor; how many."""
        claimed = 0
        while True:
            free = min(self.executor.capacity - self.executor.running - self.executor.queued(), CLAIM_BATCH)
            if free <= 0:
                return claimed
            result = (await self.db.write(queue.claim_due(self.id, now_ms(), free, self.db.dialect)))[0]
            for row in result.rows:
                self.executor.submit_claimed(QueuedJob.of(queue.scheduled(row)))
            claimed += len(result.rows)
            if len(result.rows) < free:
                return claimed

    async def _poll(self) -> None:
        """The fallback: cancels whose notification was lost, timers overdue, parents whose
        children all ended, runs to claim."""
        for job_id in await self.executor.runs.cancel_requested(self.id):
            self.executor.cancel(job_id)
        now = now_ms()
        overdue = await self.db.write(queue.wake_overdue(now - int(POLL_S * 1000), now))
        if overdue[0].rowcount:
            log.info("woke %d runs whose timer was overdue", overdue[0].rowcount)
        stalled = await self.executor.runs.stalled_parents()  # a wake lost between two children's ends
        if stalled:
            await self.db.write(*(queue.wake(job_id, now, ("WAITING",)) for job_id in stalled))
        self._wanted.set()

    # -- cancels -------------------------------------------------------------------------------------

    def _cancelled(self, payload: str) -> None:
        job_id, _, reason = payload.partition(" ")
        if self.executor.cancel(job_id, reason):
            log.info("run %s cancelled by another process", job_id)
