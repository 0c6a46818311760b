"""Timers of WAITING runs: one heap and one event-loop timer for all of them.

A run that waits for a time costs an entry here, not a task, a thread or a process, so many
thousands can wait at once. When the earliest is due, every run due by then is handed to
`wake` in one call (which puts them back to QUEUED in one write, each only if it still
waits). The heap is rebuilt from the database when the executor starts: a restart loses
no timer, and a time that passed while the server was down wakes at once.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("flowmill.timers")
BATCH = 5_000  # runs woken in one write at most


class Timers:
    def __init__(self, wake: Callable[[list[str]], Awaitable[None]]) -> None:
        self._wake = wake
        self._heap: list[tuple[int, str]] = []  # (epoch ms, run id)
        self._timer: asyncio.TimerHandle | None = None
        self._due_at: int | None = None
        self._waking: asyncio.Task[None] | None = None
        self._stopped = False

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, at_ms: int, job_id: str) -> None:
        heapq.heappush(self._heap, (at_ms, job_id))
        self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._stopped or not self._heap or self._waking is not None:
            return
        first = self._heap[0][0]
        if self._timer is not None:
            if self._due_at is not None and self._due_at <= first:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._due_at = first
        self._timer = loop.call_later(max(first / 1000 - time.time(), 0), self._fire)

    def _fire(self) -> None:
        self._timer = self._due_at = None
        self._waking = asyncio.get_running_loop().create_task(self._wake_due())

    async def _wake_due(self) -> None:
        try:
            while self._heap and not self._stopped:
                now = int(time.time() * 1000)
                due: list[str] = []
                while self._heap and self._heap[0][0] <= now and len(due) < BATCH:
                    due.append(heapq.heappop(self._heap)[1])
                if not due:
                    break
                try:
                    await self._wake(due)
                except Exception:  # a passing database error: try these again shortly
                    log.exception("waking %d runs failed; trying again in 1 s", len(due))
                    for job_id in due:
                        heapq.heappush(self._heap, (now + 1000, job_id))
                    break
        finally:
            self._waking = None
            self._arm()
