"""The executor: carries queued runs to a final status, on the event loop.

A run reaches the executor only after it is committed (`submit`). The executor keeps the
ready runs in memory, ordered by priority then time, holds back those whose concurrency key
is at its limit, and keeps at most `capacity` runs going at once. For each it claims the run
in the database (QUEUED -> RUNNING, so a run is never taken twice), awaits the runner
registered for the run's kind (which does the actual work, in a child process or a thread,
and honours cancellation), then records the outcome, with the last log lines, in one write.
A failure with retries left goes back to the queue after its backoff.

A turn may also end WAITING (for child runs, a timer, an approval, an event) or PAUSED: the
run gives back its slot and is woken later (`wake`) by what it waits for — a child's final
status (written in the same transaction), its timer (`app/engine/timers.py`), or a resume —
and runs its next turn. A waiting run costs a row and, with a timer, a heap entry: no task,
no thread, no process. Every statement on the run table comes from `app/engine/queue.py`.

Nothing here blocks: a run in flight is a coroutine waiting on its child, not a thread, so
the event loop that answers requests never hands the interpreter lock back and forth with
threads that wait on children.

Requests come first. On a small machine, runs executing at full speed take the CPU from the
requests that start them: measured on 2 cores, a webhook burst is accepted half as fast while
its runs execute. So while requests arrive faster than `BUSY_RATE` a second, runs that nobody
waits for (asynchronous ones: webhooks, async routes, schedules) start at most one every
`TRICKLE_S`; they catch up once the burst is over. A run somebody waits for (a synchronous
route, run-and-wait) always starts at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from app.engine import queue
from app.engine.logs import LogHub, LogSink
from app.engine.masks import Masks, hide, hide_json
from app.engine.queue import SUSPENDED, Policy, RunQueue, Scheduled, Wait
from app.engine.timers import Timers
from app.store.base import Database, Statement

log = logging.getLogger("flowmill.executor")

BUSY_RATE = 1000  # requests a second at which runs nobody waits for hold back
RATE_WINDOW_S = 0.1  # the rate is that of the last window of this length
TRICKLE_S = 0.2  # while held back, one of them still starts this often: the queue always moves



@dataclasses.dataclass
class QueuedJob:
    """What the executor needs to schedule a run; the rest is read by `run`."""

    id: str
    workspace: str
    path: str
    kind: str = "script"
    parent: str | None = None  # the run that started it: woken by its end when it waits for it
    priority: int = 0
    not_before: float = 0.0  # epoch seconds
    attempt: int = 1
    max_attempts: int = 1
    backoff_s: float = 1.0
    timeout_s: float | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_window_s: float | None = None
    claimed: bool = False  # written RUNNING by this process already (synchronous runs)
    resumed: bool = False  # woken from WAITING or PAUSED: its next turn, with its checkpoints
    batched: bool = False  # claimed by a batch (PostgreSQL), maybe before its concurrency let it start
    context: Any = None  # what `run` would otherwise read, when whoever queued the run knew it already

    @classmethod
    def new(cls, job_id: str, workspace: str, kind: str, path: str, policy: Policy, parent: str | None = None,
            at_ms: int = 0, attempt: int = 1, claimed: bool = False) -> QueuedJob:
        return cls(
            id=job_id, workspace=workspace, path=path, kind=kind, parent=parent, priority=policy.priority,
            not_before=at_ms / 1000, attempt=attempt, max_attempts=policy.max_attempts, backoff_s=policy.backoff_s,
            timeout_s=policy.timeout_s, concurrency_key=policy.concurrency_key,
            concurrency_limit=policy.concurrency_limit, concurrency_window_s=policy.concurrency_window_s,
            claimed=claimed,
        )

    @classmethod
    def of(cls, run: Scheduled) -> QueuedJob:
        job = cls.new(run.id, run.workspace, run.kind, run.path, run.policy, run.parent, run.scheduled_for, run.attempt)
        job.resumed = run.resumed
        return job


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # one of FINAL, or WAITING / PAUSED: the end of a turn, not of the run
    result: str | None = None  # JSON text
    error: dict[str, Any] | None = None
    args: str | None = None  # JSON text: what main got, when not the run's arguments (a preprocessor made them)
    wait: Wait | None = None  # what a WAITING run waits for
    # Written with the turn's end, before its status (child runs a workflow dispatches, the
    # records of its waits), and the runs among them handed to the executor once committed.
    writes: tuple[Statement, ...] = ()
    children: tuple[QueuedJob, ...] = ()
    # Written after a WAITING status: each puts the run back to QUEUED at once if what it
    # waits for came during the turn (an approval or an event sent while it ran).
    wakes: tuple[Statement, ...] = ()


class CancelToken:
    """Set when a run is to stop; whoever carries the run out registers how to stop it."""

    __slots__ = ("_set", "_callbacks")

    def __init__(self) -> None:
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            for callback in self._callbacks:
                callback()
            self._callbacks.clear()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` when cancelled (at once if it is already)."""
        if self._set:
            callback()
        else:
            self._callbacks.append(callback)


RunFunction = Callable[[QueuedJob, LogSink, CancelToken], Awaitable[Outcome]]


def now_ms() -> int:
    return int(time.time() * 1000)


class _Concurrency:
    """Per-key limits: at most N running at once, or N started within a time window."""

    def __init__(self) -> None:
        self.running: collections.Counter[str] = collections.Counter()
        self.started: dict[str, collections.deque[float]] = {}

    def allows(self, job: QueuedJob, now: float) -> float:
        """0 when the job may start now, else seconds to wait before asking again."""
        if job.concurrency_limit is None or job.concurrency_key is None:
            return 0
        key = job.concurrency_key
        if job.concurrency_window_s:
            starts = self.started.setdefault(key, collections.deque())
            while starts and starts[0] <= now - job.concurrency_window_s:
                starts.popleft()
            if len(starts) >= job.concurrency_limit:
                return starts[0] + job.concurrency_window_s - now
            return 0
        return 0 if self.running[key] < job.concurrency_limit else 0.05

    def start(self, job: QueuedJob, now: float) -> None:
        if job.concurrency_key is not None:
            self.running[job.concurrency_key] += 1
            self.started.setdefault(job.concurrency_key, collections.deque()).append(now)

    def finish(self, job: QueuedJob) -> None:
        if job.concurrency_key is not None:
            self.running[job.concurrency_key] -= 1


class Executor:
    def __init__(self, db: Database, capacity: int, hub: LogHub | None = None, masks: Masks | None = None) -> None:
        self.db = db
        self.runs = RunQueue(db)
        self.runners: dict[str, RunFunction] = {}  # by kind of run
        self.capacity = capacity
        self.timers = Timers(self.wake_due)
        self.hub = hub or LogHub()
        self.masks = masks or Masks()  # the secrets each run was given, kept out of what it leaves
        # Unique per process start (a pid is reused; a restarted process is another worker).
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.on_free: Callable[[], None] | None = None  # told when a slot is given back
        self._owned: set[str] = set()  # queued here unclaimed, then claimed for this process by a batch
        self._waited: list[tuple[int, float, int, QueuedJob]] = []  # runs somebody waits for
        self._ready: list[tuple[int, float, int, QueuedJob]] = []  # the others
        self._seq = itertools.count()
        self._limits = _Concurrency()
        self._cancels: dict[str, CancelToken] = {}
        self._reasons: dict[str, str] = {}  # why a run was cancelled, by run id
        self._waiters: dict[str, list[asyncio.Future[Outcome | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._stopping = False
        self._requests = 0  # requests started in the current window (counted by the request middleware)
        self._window_start = 0.0
        self._busy = False  # the verdict on the last whole window
        self._trickled = 0.0  # when the last run that nobody waits for started while busy

    @property
    def running(self) -> int:
        return len(self._tasks)

    def register(self, kind: str, runner: RunFunction) -> None:
        """Who carries out runs of `kind` (one of queue.KINDS)."""
        assert kind in queue.KINDS
        self.runners[kind] = runner

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start carrying runs out (recovery of interrupted runs is the caller's, before this)."""
        self._started = True
        self._window_start = time.time()
        self._pump()
        for at_ms, job_id in await self.runs.timers():
            self.timers.add(at_ms, job_id)

    async def stop(self) -> None:
        """Cancel running work and wait for it to be recorded."""
        self._stopping = True
        self.timers.stop()
        for token in list(self._cancels.values()):
            token.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    # -- queue -----------------------------------------------------------------------------------

    def submit(self, job: QueuedJob) -> None:
        """Queue a committed run (on the event loop)."""
        self._cancels.setdefault(job.id, CancelToken())
        queue = self._waited if job.claimed or job.id in self._waiters else self._ready
        heapq.heappush(queue, (-job.priority, job.not_before, next(self._seq), job))
        self._pump()

    def submit_claimed(self, job: QueuedJob) -> None:
        """Queue a run this process claimed already (written RUNNING by it, `queue.claim_due`)."""
        if self.knows(job.id):  # queued here before the claim: that entry carries it, unclaimed
            self._owned.add(job.id)
            return
        self.submit(dataclasses.replace(job, claimed=True, batched=True))

    def request_started(self) -> None:
        """One more HTTP request (called by the request middleware: it must cost nothing)."""
        self._requests += 1

    def busy(self, now: float) -> bool:
        """Whether requests arrived faster than `BUSY_RATE` over the last whole window."""
        elapsed = now - self._window_start
        if elapsed >= RATE_WINDOW_S:
            self._busy = self._requests >= BUSY_RATE * elapsed
            self._window_start, self._requests = now, 0
        return self._busy

    def knows(self, job_id: str) -> bool:
        """True while a run is queued or running in this process."""
        return job_id in self._cancels

    def watch(self, job_id: str) -> asyncio.Future[Outcome | None]:
        """A future resolved once a run is final: with its outcome as it was written, or None
        when this process did not carry it to its end (cancelled while queued, say)."""
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        return future

    def unwatch(self, job_id: str, future: asyncio.Future[Outcome | None]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[job_id]

    async def wake(self, statements: list[queue.Statement], ids: list[str]) -> int:
        """Write `statements` (each putting one of `ids` back to QUEUED if it still waits) and
        hand the executor those that were woken; how many."""
        if not statements:
            return 0
        results = await self.db.write(*statements)
        woken = [job_id for job_id, result in zip(ids, results) if result.rowcount]
        await self.submit_woken(woken)
        return len(woken)

    async def submit_woken(self, ids: list[str]) -> None:
        """Hand the executor the runs among `ids` that were woken (QUEUED) and it does not know."""
        for run in await self.runs.of_ids(ids):
            if not self.knows(run.id):
                self.submit(QueuedJob.of(run))

    async def wake_due(self, ids: list[str]) -> None:
        """Wake runs whose timer is due (called by `timers`)."""
        now = now_ms()
        await self.wake([queue.wake_due(job_id, now) for job_id in ids], ids)

    def cancel(self, job_id: str, reason: str = "") -> bool:
        """Ask a run of this process to stop (queued or running); True if it is known here."""
        token = self._cancels.get(job_id)
        if token is None:
            return False
        if reason:
            self._reasons[job_id] = reason
        token.set()
        self._pump()  # a cancelled run waiting for its turn is settled at once
        return True

    def _pump(self) -> None:
        """Start the runs that may start now; come back when a held-back one may."""
        if not self._started or self._stopping:
            return
        now = time.time()
        wait = self._start_from(self._waited, now, None)
        if self._ready and len(self._tasks) < self.capacity:
            busy = self.busy(now)
            if not busy:
                wait = self._start_from(self._ready, now, None, wait)
            elif now >= self._trickled + TRICKLE_S:
                self._trickled = now
                wait = self._start_from(self._ready, now, 1, wait)
            if self._ready and busy:
                wait = min(wait or TRICKLE_S, self._trickled + TRICKLE_S - now)
        if wait is not None:
            loop = asyncio.get_running_loop()
            if self._timer is not None and self._timer.when() > loop.time() + wait:
                self._timer.cancel()
                self._timer = None
            if self._timer is None:
                self._timer = loop.call_later(max(wait, 0.001), self._wake_pump)

    def _start_from(
        self, queue: list[tuple[int, float, int, QueuedJob]], now: float, most: int | None, wait: float | None = None,
    ) -> float | None:
        """Start runs of `queue` that may start (at most `most`); the wait until a held one may."""
        held: list[tuple[int, float, int, QueuedJob]] = []
        started = 0
        while queue and len(self._tasks) < self.capacity and (most is None or started < most):
            entry = heapq.heappop(queue)
            job = entry[3]
            token = self._cancels.get(job.id)
            delay = 0.0 if token is not None and token.is_set() else max(job.not_before - now, self._limits.allows(job, now))
            if delay > 0:
                held.append(entry)
                wait = delay if wait is None else min(wait, delay)
                continue
            self._limits.start(job, now)
            task = asyncio.get_running_loop().create_task(self._carry(job))
            self._tasks.add(task)
            task.add_done_callback(self._finished(job))
            started += 1
        for entry in held:
            heapq.heappush(queue, entry)
        return wait

    def _wake_pump(self) -> None:
        self._timer = None
        self._pump()

    def _finished(self, job: QueuedJob) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._limits.finish(job)
            if not task.cancelled() and task.exception() is not None:
                log.error("the executor failed on run %s", job.id, exc_info=task.exception())
            self._pump()
            if self.on_free is not None:
                self.on_free()
        return done

    # -- work ------------------------------------------------------------------------------------

    async def _carry(self, job: QueuedJob) -> None:
        cancel = self._cancels.setdefault(job.id, CancelToken())
        if not job.claimed and job.id not in self._owned:
            claimed = (await self.db.write(queue.claim(job.id, self.worker_id, job.attempt, now_ms())))[0]
            # Not taken: cancelled while queued, or another process took it (or, just now, a
            # batch claim of this one: `submit_claimed`).
            if claimed.rowcount == 0 and job.id not in self._owned:
                self._settle(job.id, None)
                return
        if job.concurrency_limit is not None and (job.batched or job.id in self._owned):
            # Claimed by a batch, then held back by its concurrency limit: it starts now.
            await self.db.write(queue.started(job.id, now_ms()))
        self._owned.discard(job.id)
        secrets = self.masks.of(job.id)
        sink = LogSink(job.id, self.hub, self.db, secrets)
        if cancel.is_set():
            outcome = Outcome("CANCELLED", error={"name": "Cancelled", "message": "cancelled before it started"})
        else:
            if job.attempt > 1:
                sink.note(f"attempt {job.attempt} of {job.max_attempts}")
            runner = self.runners.get(job.kind)
            try:
                if runner is None:
                    raise RuntimeError(f"this process carries out no runs of kind {job.kind!r}")
                outcome = await runner(job, sink, cancel)
            except Exception as error:  # a fault of ours, not of the user's code
                log.exception("run %s could not be carried out", job.id)
                outcome = Outcome("FAILED", error={"name": type(error).__name__, "message": str(error)})
        if secrets:
            outcome = _masked(outcome, secrets)
        retry = outcome.status in ("FAILED", "TIMED_OUT") and job.attempt < job.max_attempts and not cancel.is_set()
        if retry:
            delay = job.backoff_s * (2 ** (job.attempt - 1))
            sink.note(f"attempt {job.attempt} ended {outcome.status}; retrying in {delay:g} s")
            statements = await sink.take_pending()
            statements.append(queue.retry(job.id, job.attempt + 1, int((time.time() + delay) * 1000), _json(outcome.error),
                                          self.worker_id))
            await self.db.write(*statements)
            self.submit(dataclasses.replace(job, attempt=job.attempt + 1, not_before=time.time() + delay, claimed=False))
            return
        if outcome.status in SUSPENDED and not cancel.is_set():
            await self._suspend(job, sink, outcome)
            return
        if outcome.status in SUSPENDED:  # cancelled as its turn ended
            outcome = Outcome("CANCELLED", error={"name": "Cancelled", "message": "cancelled"})
        if outcome.status == "CANCELLED" and job.id in self._reasons:
            outcome = Outcome("CANCELLED", error={"name": "Cancelled", "message": self._reasons[job.id]})
        self.masks.forget(job.id)
        statements = await sink.take_pending()
        statements += outcome.writes
        if outcome.children:
            statements += queue.announce(self.db.dialect)
        now = now_ms()
        finish = queue.finish(job.id, outcome.status, outcome.result, _json(outcome.error), now, outcome.args,
                              self.worker_id)
        statements.append(finish)
        if job.parent is not None:  # a parent waiting for its children wakes in the same commit
            statements = [*queue.lock_parent(job.parent, self.db.dialect), *statements,
                          queue.wake_parent(job.parent, now)]
        results = await self.db.write(*statements)
        if not results[statements.index(finish)].rowcount:
            log.warning("run %s was recovered by another process while this one carried it (taken for dead): "
                        "its outcome here, %s, is not recorded", job.id, outcome.status)
        self._settle(job.id, outcome)
        self._start_children(outcome)
        if job.parent is not None and results[-1].rowcount:
            await self.submit_woken([job.parent])

    def _start_children(self, outcome: Outcome) -> None:
        """Hand the executor the runs a turn's end queued (committed now)."""
        for child in outcome.children:
            if not self.knows(child.id):
                self.submit(child)

    async def _suspend(self, job: QueuedJob, sink: LogSink, outcome: Outcome) -> None:
        """The end of a turn: the run waits (or is paused) without a slot."""
        statements = await sink.take_pending()
        statements += outcome.writes
        statements.append(queue.suspend(job.id, outcome.status, outcome.wait))
        children = outcome.wait is not None and outcome.wait.children is not None
        wakes = list(outcome.wakes) if outcome.status == "WAITING" else []
        if children:  # children that ended during the turn: woken at once
            wakes.append(queue.wake_if_ready(job.id, now_ms()))
        statements += wakes
        announce = queue.announce(self.db.dialect) if outcome.children else []
        results = await self.db.write(*statements, *announce)
        self._cancels.pop(job.id, None)
        self._reasons.pop(job.id, None)
        self.hub.publish(job.id)
        self._start_children(outcome)
        woken = any(result.rowcount for result in results[len(statements) - len(wakes):len(statements)])
        if woken:
            await self.submit_woken([job.id])
        elif outcome.wait is not None and outcome.wait.until_ms is not None:
            self.timers.add(outcome.wait.until_ms, job.id)

    def _settle(self, job_id: str, outcome: Outcome | None) -> None:
        self._cancels.pop(job_id, None)
        self._reasons.pop(job_id, None)
        self.hub.publish(job_id, False)
        for future in self._waiters.pop(job_id, []):
            if not future.done():
                future.set_result(outcome)

    def queued(self) -> int:
        return len(self._waited) + len(self._ready)


def _masked(outcome: Outcome, secrets: set[str]) -> Outcome:
    """The outcome with the run's secrets masked in its result and its error."""
    error = outcome.error and {k: hide(v, secrets) if isinstance(v, str) else v for k, v in outcome.error.items()}
    return dataclasses.replace(
        outcome, result=None if outcome.result is None else hide_json(outcome.result, secrets), error=error,
        args=None if outcome.args is None else hide_json(outcome.args, secrets))


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
