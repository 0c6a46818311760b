"""A run's log lines: kept in the database in batches, with live listeners told of each batch.

Lines arrive on an executor thread. They are written in batches (every `FLUSH_LINES` lines or
`FLUSH_S` seconds); after each batch, listeners on the event loop are woken to read the new
lines from the database, so a listener never sees a line twice or misses one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from app.store.base import Statement

RESULT_STREAM_PREFIX = "WM_STREAM: "
FLUSH_LINES = 500
FLUSH_S = 0.1


def insert_lines(job_id: str, lines: list[tuple[int, str, str]]) -> Statement:
    """One multi-row INSERT of (ts ms, stream, line) rows."""
    values = ", ".join(f"(${i * 4 + 1}, ${i * 4 + 2}, ${i * 4 + 3}, ${i * 4 + 4})" for i in range(len(lines)))
    args: list[Any] = []
    for ts, stream, line in lines:
        args += [job_id, ts, stream, line]
    return Statement(f"INSERT INTO job_log (job_id, ts, stream, line) VALUES {values}", args)


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
    """Collects one run's lines on its executor thread."""

    def __init__(
        self,
        job_id: str,
        hub: LogHub,
        loop: asyncio.AbstractEventLoop,
        write: Callable[..., Any],
    ) -> None:
        self.job_id = job_id
        self._hub = hub
        self._loop = loop
        self._write = write
        self._buffer: list[tuple[int, str, str]] = []
        self._flushed_at = time.monotonic()
        self.count = 0

    def line(self, ts: float, stream: str, text: str) -> None:
        """Take one line (called by the process layer as lines arrive). A `WM_STREAM: ` line
        (Windmill's `append_to_result_stream`) is text of the result stream."""
        if text.startswith(RESULT_STREAM_PREFIX):
            stream, text = "result", text[len(RESULT_STREAM_PREFIX):].replace("\\n", "\n")
        entry = (int(ts * 1000), stream, text)
        self._buffer.append(entry)
        self.count += 1
        if len(self._buffer) >= FLUSH_LINES or time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()

    def note(self, text: str) -> None:
        """A line of Flowmill's own about the run (attempts, cache hits)."""
        self.line(time.time(), "flowmill", f"[flowmill] {text}")

    def flush(self) -> None:
        if self._buffer:
            lines, self._buffer = self._buffer, []
            self._write(insert_lines(self.job_id, lines))
            self._loop.call_soon_threadsafe(self._hub.publish, self.job_id)
        self._flushed_at = time.monotonic()

    def take_pending(self) -> Statement | None:
        """The unwritten lines as one statement, to commit with the run's completion."""
        if not self._buffer:
            return None
        lines, self._buffer = self._buffer, []
        return insert_lines(self.job_id, lines)
