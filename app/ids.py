"""Random ids for the hot path: bytes of `os.urandom`, read 4 KiB at a time.

Each `os.urandom` call gives up the interpreter lock for its system call, and the event loop
then waits to win it back from the database's writer thread; a run needs two random ids (its
own and its token's), so they come from a buffer instead. The bytes are the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

CHUNK = 4096

_lock = threading.Lock()
_buffer = b""
_at = 0


def random_bytes(n: int) -> bytes:
    """`n` random bytes (as from os.urandom)."""
    global _buffer, _at
    with _lock:
        if _at + n > len(_buffer):
            _buffer, _at = os.urandom(max(CHUNK, n)), 0
        data = _buffer[_at:_at + n]
        _at += n
        return data


def random_uuid() -> str:
    """A version 4 UUID, as text."""
    return str(uuid.UUID(bytes=random_bytes(16), version=4))


def _forget() -> None:  # a forked process must not hand out its parent's next bytes
    global _buffer, _at
    _buffer, _at = b"", 0


os.register_at_fork(after_in_child=_forget)
