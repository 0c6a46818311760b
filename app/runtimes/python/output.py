"""A run's output: the pipe a child's stdout and stderr point at, read by the fork server as
log lines within the job's limits."""

from __future__ import annotations

import os
import time

MAX_LINE = 16 * 1024
DRAIN_S = 0.5  # after a run ends: how long to keep reading output that is still being written


class RunOutput:
    """A run's output pipe, read as log lines within the job's limits: past them, lines are
    counted and dropped, and one marker line at the end says how many."""

    def __init__(self, fd: int, max_lines: int, max_bytes: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.lines = self.bytes = self.dropped = 0
        self.partial = b""
        self.skipping = False  # inside a line that was cut: drop the rest of it
        self.pending: list[tuple[float, str, str]] = []  # read, not yet sent

    def _chunk(self) -> bytes | None:
        """What the pipe holds now: None if nothing, b"" at the end (every writer has closed it)."""
        try:
            return os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return None

    def read(self) -> bool:
        """Read what is there; False at the end."""
        chunk = self._chunk()
        if chunk:
            self._feed(chunk, time.time())
        return chunk != b""

    def drain(self) -> None:
        """Read what is in the pipe now. A process the script left behind may keep writing:
        stop at an empty pipe, or after `DRAIN_S`."""
        until = time.monotonic() + DRAIN_S
        while time.monotonic() < until and (chunk := self._chunk()):
            self._feed(chunk, time.time())

    def finish(self) -> None:
        """The last line without a newline, and the truncation marker."""
        now = time.time()
        if self.partial and not self.skipping:
            self._line(self.partial, now)
            self.partial = b""
        if self.dropped:
            limit = f"{self.max_lines} lines" if self.lines >= self.max_lines else f"{self.max_bytes} bytes"
            self.pending.append((now, "flowmill", f"[flowmill] log truncated after {self.lines} lines; "
                                                  f"{self.dropped} more lines were dropped (the limit is {limit})"))
            self.dropped = 0

    def _feed(self, chunk: bytes, now: float) -> None:
        if self.skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return
            chunk, self.skipping = chunk[end + 1:], False
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self._line(line, now)
        if len(self.partial) > MAX_LINE:  # a very long line: keep its start, drop the rest as it comes
            self._line(self.partial, now)
            self.partial, self.skipping = b"", True

    def _line(self, raw: bytes, now: float) -> None:
        kept = raw[:MAX_LINE].removesuffix(b"\r")
        if self.lines >= self.max_lines or self.bytes + len(kept) > self.max_bytes:
            self.dropped += 1
            return
        text = kept.decode("utf-8", "replace")
        if len(raw) > MAX_LINE:
            text += f" [flowmill] line cut at {MAX_LINE} bytes"
        self.lines += 1
        self.bytes += len(kept)
        self.pending.append((now, "stdout", text))

