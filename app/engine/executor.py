"""The executor: a pool of threads that claim queued runs and carry them to a final status.

A run reaches the executor only after it is committed (`submit`). The executor keeps the
ready runs in memory, ordered by priority then time, and holds back those whose concurrency
key is at its limit. A thread claims a run in the database (QUEUED -> RUNNING, so a run is
never taken twice), hands it to the `run` function it was given (which does the actual work
and honours timeouts and cancellation), then records the outcome, with the last log lines,
in one write. A failure with retries left goes back to the queue after its backoff.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from app.engine.logs import LogHub, LogSink
from app.store.base import Database, Statement

log = logging.getLogger("flowmill.executor")

FINAL = ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT")


@dataclasses.dataclass
class QueuedJob:
    """What the executor needs to schedule a run; the rest is read by `run`."""

    id: str
    workspace: str
    path: str
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


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # one of FINAL
    result: str | None = None  # JSON text
    error: dict[str, Any] | None = None


RunFunction = Callable[[QueuedJob, LogSink, threading.Event], Outcome]


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
    def __init__(self, db: Database, run: RunFunction, threads: int, hub: LogHub | None = None) -> None:
        self.db = db
        self.run = run
        self.threads = threads
        self.hub = hub or LogHub()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Condition()
        self._ready: list[tuple[int, float, int, QueuedJob]] = []
        self._seq = itertools.count()
        self._limits = _Concurrency()
        self._cancels: dict[str, threading.Event] = {}
        self._reasons: dict[str, str] = {}  # why a run was cancelled, by run id
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self.busy = 0

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the threads (recovery of interrupted runs is the caller's, before this)."""
        self._loop = asyncio.get_running_loop()
        for index in range(self.threads):
            worker = threading.Thread(target=self._work, name=f"flowmill-executor-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    async def stop(self) -> None:
        """Cancel running work and wait for the threads to record it."""
        with self._lock:
            self._stopping = True
            for event in self._cancels.values():
                event.set()
            self._lock.notify_all()
        for worker in self._workers:
            await asyncio.to_thread(worker.join, 10)
        self._workers.clear()

    # -- queue -----------------------------------------------------------------------------------

    def submit(self, job: QueuedJob) -> None:
        """Queue a committed run (any thread)."""
        with self._lock:
            self._cancels.setdefault(job.id, threading.Event())
            heapq.heappush(self._ready, (-job.priority, job.not_before, next(self._seq), job))
            self._lock.notify()

    def knows(self, job_id: str) -> bool:
        """True while a run is queued or running in this process."""
        with self._lock:
            return job_id in self._cancels

    def watch(self, job_id: str) -> asyncio.Future[str]:
        """A future resolved with the final status of a run (on the event loop)."""
        assert self._loop is not None
        future: asyncio.Future[str] = self._loop.create_future()
        self._waiters.setdefault(job_id, []).append(future)
        return future

    def unwatch(self, job_id: str, future: asyncio.Future[str]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[job_id]

    def cancel(self, job_id: str, reason: str = "") -> bool:
        """Ask a run of this process to stop (queued or running); True if it is known here."""
        with self._lock:
            event = self._cancels.get(job_id)
            if event is None:
                return False
            if reason:
                self._reasons[job_id] = reason
            event.set()
            self._lock.notify_all()
            return True

    def _next(self) -> QueuedJob | None:
        """The next run allowed to start, waiting for one; None when stopping."""
        with self._lock:
            while not self._stopping:
                now = time.time()
                held: list[tuple[int, float, int, QueuedJob]] = []
                wait = 1.0
                found = None
                while self._ready:
                    entry = heapq.heappop(self._ready)
                    job = entry[3]
                    delay = max(job.not_before - now, self._limits.allows(job, now))
                    if delay <= 0:
                        found = job
                        break
                    held.append(entry)
                    wait = min(wait, delay)
                for entry in held:
                    heapq.heappush(self._ready, entry)
                if found is not None:
                    self._limits.start(found, now)
                    return found
                self._lock.wait(wait)
            return None

    # -- work ------------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _write(self, *statements: Statement) -> Any:
        return self.db.write_from_thread(self._loop, *statements)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self.busy += 1
            try:
                self._carry(job)
            except Exception:
                log.exception("the executor failed on run %s", job.id)
            finally:
                self.busy -= 1
                with self._lock:
                    self._limits.finish(job)
                    self._lock.notify_all()

    def _carry(self, job: QueuedJob) -> None:
        cancel = self._cancels.setdefault(job.id, threading.Event())
        if not job.claimed:
            claimed = self._write(Statement(
                "UPDATE job SET status = 'RUNNING', started_at = $1, worker = $2, attempt = $3 "
                "WHERE id = $4 AND status = 'QUEUED'",
                (now_ms(), self.worker_id, job.attempt, job.id),
            ))[0]
            if claimed.rowcount == 0:  # cancelled while queued, or another process took it
                self._settle(job.id, None)
                return
        sink = LogSink(job.id, self.hub, self._loop, self._write)  # type: ignore[arg-type]
        if cancel.is_set():
            outcome = Outcome("CANCELLED", error={"name": "Cancelled", "message": "cancelled before it started"})
        else:
            if job.attempt > 1:
                sink.note(f"attempt {job.attempt} of {job.max_attempts}")
            try:
                outcome = self.run(job, sink, cancel)
            except Exception as error:  # a fault of ours, not of the user's code
                log.exception("run %s could not be carried out", job.id)
                outcome = Outcome("FAILED", error={"name": type(error).__name__, "message": str(error)})
        retry = outcome.status in ("FAILED", "TIMED_OUT") and job.attempt < job.max_attempts and not cancel.is_set()
        statements = [s for s in (sink.take_pending(),) if s is not None]
        if retry:
            delay = job.backoff_s * (2 ** (job.attempt - 1))
            sink.note(f"attempt {job.attempt} ended {outcome.status}; retrying in {delay:g} s")
            statements += [s for s in (sink.take_pending(),) if s is not None]
            statements.append(Statement(
                "UPDATE job SET status = 'QUEUED', attempt = $1, scheduled_for = $2, error = $3 WHERE id = $4",
                (job.attempt + 1, int((time.time() + delay) * 1000), _json(outcome.error), job.id),
            ))
            self._write(*statements)
            self.submit(dataclasses.replace(job, attempt=job.attempt + 1, not_before=time.time() + delay, claimed=False))
            return
        if outcome.status == "CANCELLED" and job.id in self._reasons:
            outcome = Outcome("CANCELLED", error={"name": "Cancelled", "message": self._reasons[job.id]})
        statements.append(Statement(
            "UPDATE job SET status = $1, result = $2, error = $3, finished_at = $4 WHERE id = $5",
            (outcome.status, outcome.result, _json(outcome.error), now_ms(), job.id),
        ))
        self._write(*statements)
        self._settle(job.id, outcome.status)

    def _settle(self, job_id: str, status: str | None) -> None:
        with self._lock:
            self._cancels.pop(job_id, None)
            self._reasons.pop(job_id, None)
        assert self._loop is not None
        # Nobody watching, nobody streaming: no need to wake the event loop. (One who starts
        # watching later reads the final status, committed before this, after subscribing.)
        if job_id in self._waiters or self.hub.listening(job_id):
            self._loop.call_soon_threadsafe(self._wake, job_id, status)

    def _wake(self, job_id: str, status: str | None) -> None:
        self.hub.publish(job_id, False)
        for future in self._waiters.pop(job_id, []):
            if not future.done():
                future.set_result(status or "")

    def queued(self) -> int:
        return len(self._ready)


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
