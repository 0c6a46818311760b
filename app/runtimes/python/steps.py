"""A run's steps, from inside its child: checkpoints stored before the run goes on, and the
end of a turn.

    value = step("fetch orders", fetch, since)   # run once: replayed from its checkpoint after
    sleep(3600)                                   # the run waits an hour, holding no process
    decision = wait_for_approval("manager")       # until /jobs_u/resume/... answers
    event = wait_for_event("payment")             # until POST /jobs/{id}/events sends one

`step` runs `fn` once per run: its JSON result is sent to the server as a checkpoint, and the
child waits until the server says it is stored; when the run runs again (a retry, or the next
turn after a wait), a step that is stored returns its stored result without running `fn`.
The waits end the turn (`Suspended`): the child exits, the run waits without a slot or a
process, and what it waits for runs it again from the top, its stored steps replayed, until it
gets past the wait. What a run is sent (an approval, an event) is stored like a step, by the
server, whether or not the run waits for it yet.
Names are a run's own: one name twice in a run is refused (replay would be ambiguous), and a
run that reaches stored steps in another order than before is told which diverged.
Outside a Flowmill run (no server to store them), `step` just calls `fn`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from app.runtimes.python.protocol import Checkpoint, encode_frame, read_ack, send

T = TypeVar("T")
MAX_STEP_BYTES = 1024 * 1024  # a step's result, as JSON
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


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
    sleeps = 0  # sleep() calls so far: each is named by its place
    events: dict[str, int] = {}  # wait_for_event() calls so far, by type


def begin(fd: int, stored: dict[str, str]) -> None:
    """Called by the child's runner before the script runs."""
    _Run.fd, _Run.stored, _Run.seen, _Run.seq, _Run.sleeps, _Run.events = fd, dict(stored), set(), 0, 0, {}


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


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding a process: the first time, the wake time is a step."""
    _Run.sleeps += 1
    wake_ms = step(f"sleep:{_Run.sleeps}", lambda: int(time.time() * 1000 + seconds * 1000))
    if time.time() * 1000 < wake_ms:
        suspend(until_ms=wake_ms)


def wait_for_approval(name: str = "approval", timeout_s: float | None = None) -> dict[str, Any]:
    """The answer to the approval `name` ({approved, approver, payload}), waiting for it; with
    `timeout_s`, {approved: False, timedOut: True} once that has passed."""
    _check_name(name)
    return _wait_for("approval", name, f"approval:{name}", timeout_s)


def wait_for_event(event_type: str, timeout_s: float | None = None) -> dict[str, Any]:
    """The next event of `event_type` sent to this run ({type, payload, sentBy}), waiting for it;
    events sent before are buffered, each taken once, in order."""
    _check_name(event_type)
    _Run.events[event_type] = _Run.events.get(event_type, 0) + 1
    return _wait_for("event", event_type, f"event:{event_type}:{_Run.events[event_type]}", timeout_s)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise StepError("a name to wait for is 1-100 letters, digits and _ . : -")


def _wait_for(what: str, name: str, key: str, timeout_s: float | None) -> dict[str, Any]:
    if key in _Run.stored:
        _Run.seen.add(key)
        return json.loads(_Run.stored[key])
    until = None
    if timeout_s is not None:
        until = step(f"{key}:deadline", lambda: int(time.time() * 1000 + timeout_s * 1000))
        if time.time() * 1000 >= until:
            return {"approved": False, "timedOut": True} if what == "approval" else {"type": name, "timedOut": True}
    if what == "approval":
        suspend(until_ms=until, approval=name)
    suspend(until_ms=until, event=name)
    raise AssertionError("unreachable")


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
