"""What the server says on stderr: its log lines, as text or JSON, and an access log line for
every answered request.

The access log is on the path of every request, so it is not written through `logging` there:
a request adds a tuple to a buffer (well under a microsecond), and the event loop writes the
buffer as lines every `FLUSH_S` (and at shutdown), in the same format as the other lines.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import threading
import time
from typing import Any, TextIO

import msgspec

LEVELS = ("debug", "info", "warning", "error")
FLUSH_S = 0.1
MAX_BUFFERED = 50_000  # lines kept while the loop is too busy to write them; past it they are counted
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_encode = msgspec.json.Encoder().encode


def _timestamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure(level: str, json_format: bool, stream: TextIO = sys.stderr) -> None:
    """Send every log line to `stream`, at `level` and above, as text or JSON."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy, floor in (("_granian", logging.ERROR), ("granian", logging.ERROR), ("piccolo", logging.WARNING)):
        logging.getLogger(noisy).setLevel(floor)


class AccessLog:
    """`<method> <route template> <status> <ms> <request id>` for every answered request."""

    def __init__(self, enabled: bool, json_format: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.json = json_format
        self.stream = stream
        self._lines: list[tuple[float, str, str, int, float, str]] = []
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.get_ident()  # the event loop's: the only one that touches the buffer
        # Lines logged on the loop come after the access lines buffered before them, in order.
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._before_record)

    def _before_record(self, record: logging.LogRecord) -> bool:
        if self._lines and threading.get_ident() == self._thread:
            self.flush()
        return True

    def record(self, method: str, route: str, status: int, seconds: float, request_id: str) -> None:
        """One answered request (on the event loop)."""
        if not self.enabled:
            return
        if len(self._lines) >= MAX_BUFFERED:
            self._dropped += 1
            return
        self._lines.append((time.time(), method, route, status, seconds, request_id))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Write what is buffered."""
        self._timer = None
        lines, self._lines = self._lines, []
        if self._dropped:
            lines.append((time.time(), "-", f"[{self._dropped} access log lines dropped]", 0, 0.0, "-"))
            self._dropped = 0
        if not lines:
            return
        if self.json:
            text = "".join(
                _encode({"ts": _timestamp(ts), "level": "info", "logger": "flowmill.access", "method": method,
                         "route": route, "status": status, "ms": round(seconds * 1000, 2), "requestId": rid}).decode() + "\n"
                for ts, method, route, status, seconds, rid in lines
            )
        else:
            text = "".join(
                f"{_text_time(ts)} INFO flowmill.access: {method} {route} {status} {seconds * 1000:.1f}ms {rid}\n"
                for ts, method, route, status, seconds, rid in lines
            )
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: the lines have nowhere to go
            pass


def _text_time(epoch: float) -> str:
    """The time as logging's default text format writes it (2026-12-01 21:41:50,123)."""
    local = time.localtime(epoch)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', local)},{int(epoch % 1 * 1000):03d}"
