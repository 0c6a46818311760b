"""How statuses, times and values read in tables and panels."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from rich.text import Text

STATUS_STYLE = {
    "SUCCESS": "green", "COMPLETE": "green", "APPROVED": "green",
    "FAILED": "bold red", "ERRORED": "bold red", "TIMED_OUT": "red", "REJECTED": "red",
    "RUNNING": "bold yellow", "QUEUED": "dim", "WAITING": "cyan", "PAUSED": "magenta", "WAITINGFORPAUSE": "magenta",
    "PENDING": "bold cyan", "CANCELLED": "dim magenta", "TERMINATED": "dim magenta",
}
STATUS_ICON = {
    "SUCCESS": "✔", "COMPLETE": "✔", "APPROVED": "✔", "FAILED": "✘", "ERRORED": "✘", "TIMED_OUT": "⌛", "REJECTED": "✘",
    "RUNNING": "▶", "QUEUED": "…", "WAITING": "◷", "PAUSED": "⏸", "WAITINGFORPAUSE": "⏸", "PENDING": "?",
    "CANCELLED": "■", "TERMINATED": "■",
}


def status(value: str | None, icon: bool = False) -> Text:
    name = (value or "?").upper()
    label = f"{STATUS_ICON.get(name, '·')} {value}" if icon else str(value)
    return Text(label, style=STATUS_STYLE.get(name, ""))


def when(ms: int | None) -> str:
    """A moment as local time: the time alone today, else the date too."""
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000)
    today = datetime.date.today()
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M")


def ago(ms: int | None) -> str:
    if not ms:
        return "-"
    seconds = max(0.0, time.time() - ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def short_id(value: str | None) -> str:
    return (value or "")[:8]


def compact(value: Any, width: int = 60) -> str:
    """A JSON value on one line, cut to `width`."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def error_text(error: Any) -> str:
    """A run's error as one line: its name and message."""
    if not error:
        return ""
    if isinstance(error, dict):
        name = error.get("name") or error.get("code") or ""
        message = error.get("message") or ""
        return f"{name}: {message}" if name and message else str(name or message or compact(error))
    return str(error)
