"""A run's steps, from inside its child: checkpoints stored before the run goes on, and the
end of a turn.

    value = step("fetch orders", fetch, since)   # run once: replayed from its checkpoint after
    suspend(until_ms=...)                        # end the turn; the run waits, then runs again

`step` runs `fn` once per run: its JSON result is sent to the server as a checkpoint, and the
child waits until the server says it is stored; when the run runs again (a retry, or the next
turn after a wait), a step that is stored returns its stored result without running `fn`.
Names are a run's own: one name twice in a run is refused (replay would be ambiguous), and a
run that reaches stored steps in another order than before is told which diverged.
Outside a Flowmill run (no server to store them), `step` just calls `fn`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from app.runtimes.python.protocol import Checkpoint, encode_frame, read_ack, send

T = TypeVar("T")
MAX_STEP_BYTES = 1024 * 1024  # a step's result, as JSON


class StepError(Exception):
    """A step cannot be taken: a name used twice, a result too large or not JSON."""


class Suspend(BaseException):
    """Raised by `suspend`: ends the turn (a BaseException, so that `except Exception` in the
    script does not swallow it)."""

    def __init__(self, wait: dict[str, Any]) -> None:
        super().__init__("the run is waiting")
        self.wait = wait


class _Run:
    fd: int | None = None  # the child's connection to the fork server, in a Flowmill run
    stored: dict[str, str] = {}  # name -> JSON text
    seen: set[str] = set()
    seq = 0


def begin(fd: int, stored: dict[str, str]) -> None:
    """Called by the child's runner before the script runs."""
    _Run.fd, _Run.stored, _Run.seen, _Run.seq = fd, dict(stored), set(), len(stored)


def step(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, once per run: its result is checkpointed before the run goes on."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise StepError("a step's name is a string of 1 to 255 characters")
    if name in _Run.seen:
        raise StepError(f"the step {name!r} is taken twice in this run: give each step its own name")
    _Run.seen.add(name)
    if name in _Run.stored:
        return json.loads(_Run.stored[name])
    value = fn(*args, **kwargs)
    checkpoint(name, value)
    return value


def checkpoint(name: str, value: Any) -> None:
    """Store `value` as step `name`'s result; return once the server has it."""
    try:
        text = msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as error:
        raise StepError(f"the result of step {name!r} is not JSON: {error}") from None
    if len(text) > MAX_STEP_BYTES:
        raise StepError(f"the result of step {name!r} is {len(text)} bytes; a step's result is limited to "
                        f"{MAX_STEP_BYTES} bytes (store large data elsewhere and return a reference)")
    _Run.stored[name] = text.decode()
    if _Run.fd is None:
        return
    seq, _Run.seq = _Run.seq, _Run.seq + 1
    send(_Run.fd, encode_frame(Checkpoint(seq, name, msgspec.Raw(text))))
    ack = read_ack(_Run.fd)
    if ack.seq != seq:
        raise StepError(f"the server acknowledged step {ack.seq}, not {seq}")


def suspend(until_ms: int | None = None, children: str | None = None, approval: str | None = None,
            event: str | None = None, paused: bool = False) -> None:
    """End the turn: the run waits (without a process) for whichever comes first of a time, its
    child runs ("all" or "any"), an approval, an event; or is paused until resumed."""
    wait = {k: v for k, v in (("untilMs", until_ms), ("children", children), ("approval", approval),
                              ("event", event)) if v is not None}
    if paused:
        wait = {"paused": True}
    if not wait:
        raise StepError("suspend() needs something to wait for")
    raise Suspend(wait)
