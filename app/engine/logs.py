"""A run's log lines: kept in the database in batches, with live listeners told of each batch.

Lines arrive on the event loop as the fork server reads them. They are written in batches
(every `FLUSH_LINES` lines, or `FLUSH_S` after the first line of a batch), one batch after
the other; after each batch, listeners are woken to read the new lines from the database, so
a listener never sees a line twice or misses one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.engine.masks import hide
from app.engine.queue import insert_lines
from app.store.base import Database, Statement

RESULT_STREAM_PREFIX = "WM_STREAM: "
FLUSH_LINES = 500
FLUSH_S = 0.1


class LogHub:
    """Live subscribers of runs' logs; lives on the event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[bool]]] = {}

    def subscribe(self, job_id: str) -> asyncio.Queue[bool]:
        """A queue that receives True when lines were written, False when the run is over."""
        queue: asyncio.Queue[bool] = asyncio.Queue(maxsize=1)
        self._subscribers.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[Any]) -> None:
        listeners = self._subscribers.get(job_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._subscribers[job_id]

    def publish(self, job_id: str, more: bool = True) -> None:
        for queue in self._subscribers.get(job_id, ()):
            if queue.empty():  # one pending wake-up is enough
                queue.put_nowait(more)

    def listening(self, job_id: str) -> bool:
        return job_id in self._subscribers


class LogSink:
    """Collects one run's lines and writes them in batches, in order."""

    def __init__(self, job_id: str, hub: LogHub, db: Database, secrets: set[str] | None = None) -> None:
        self.job_id = job_id
        self._hub = hub
        self._db = db
        self._secrets = set() if secrets is None else secrets  # masked in every line (app.engine.masks)
        self._buffer: list[tuple[int, str, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None  # the last batch's write: the next waits for it
        self.count = 0

    def line(self, ts: float, stream: str, text: str) -> None:
        """Take one line (called by the process layer as lines arrive). A `WM_STREAM: ` line
        (Windmill's `append_to_result_stream`) is text of the result stream."""
        if text.startswith(RESULT_STREAM_PREFIX):
            stream, text = "result", text[len(RESULT_STREAM_PREFIX):].replace("\\n", "\n")
        if self._secrets:
            text = hide(text, self._secrets)
        self._buffer.append((int(ts * 1000), stream, text))
        self.count += 1
        if len(self._buffer) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def note(self, text: str) -> None:
        """A line of Flowmill's own about the run (attempts, cache hits)."""
        self.line(time.time(), "flowmill", f"[flowmill] {text}")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        self._stop_timer()
        if self._buffer:
            lines, self._buffer = self._buffer, []
            self._writing = asyncio.get_running_loop().create_task(self._write(self._writing, insert_lines(self.job_id, lines)))

    async def _write(self, previous: asyncio.Task[None] | None, statement: Statement) -> None:
        if previous is not None:
            await previous
        try:
            await self._db.write(statement)
        except Exception:  # the run goes on; its final write says how it ended
            logging.getLogger("flowmill.logs").exception("writing log lines of run %s failed", self.job_id)
            return
        self._hub.publish(self.job_id)

    async def take_pending(self) -> list[Statement]:
        """Once the batches under way are written: the unwritten lines, as statements to commit
        with the run's completion."""
        self._stop_timer()
        if self._writing is not None:
            await self._writing
        if not self._buffer:
            return []
        lines, self._buffer = self._buffer, []
        return [insert_lines(self.job_id, lines)]
