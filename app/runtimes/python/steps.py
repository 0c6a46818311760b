"""A run's steps, from inside its child: checkpoints stored before the run goes on, and the
end of a turn.

    value = step("fetch orders", fetch, since)   # run once: replayed from its checkpoint after
    value = step("charge", charge, retry=Retry(limit=3, delay=10))  # tried again, waiting durably
    sleep(3600)                                   # the run waits an hour, holding no process
    decision = wait_for_approval("manager")       # until /jobs_u/resume/... answers
    event = wait_for_event("payment", timeout=60) # until POST /jobs/{id}/events sends one

`step` runs `fn` once per run: its JSON result is sent to the server as a checkpoint, and the
child waits until the server says it is stored; when the run runs again (a retry, or the next
turn after a wait), a step that is stored returns its stored result without running `fn`.
The waits end the turn (`Suspended`): the child exits, the run waits without a slot or a
process, and what it waits for runs it again from the top, its stored steps replayed, until it
gets past the wait. What a run is sent (an approval, an event) is stored like a step, by the
server, whether or not the run waits for it yet; so is a wait's timeout, once it has passed.
Names are a run's own: one name twice in a run is refused (replay would be ambiguous), and a
replay that reaches stored steps in another order than they were stored raises
`NonDeterminismError`, naming the step. The server's answer to a checkpoint may ask the run to
pause: the turn then ends there, PAUSED, and the next one replays.
Outside a Flowmill run (no server to store them), `step` just calls `fn`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import msgspec

from app.runtimes.python import records
from app.runtimes.python.protocol import Checkpoint, encode_frame, read_ack, send

T = TypeVar("T")
MAX_STEP_BYTES = 1024 * 1024  # a step's result, as JSON
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
DURABLE_RETRY_S = 1.0  # a retry that waits this long or more ends the turn rather than sleeping in place


class StepError(Exception):
    """A step cannot be taken: a name used twice or reserved, a result too large or not JSON."""


class NonDeterminismError(StepError):
    """A replay reached the run's stored steps in another order than they were stored: the
    workflow's code, or what it branches on outside steps, changed between two turns."""


class EventTimeout(Exception):
    """`wait_for_event` waited longer than its timeout; the workflow may catch it."""

    def __init__(self, event_type: str, timeout_s: float) -> None:
        super().__init__(f"no event of type {event_type!r} came within {timeout_s:g} s")
        self.event_type = event_type
        self.timeout_s = timeout_s


class Suspend(BaseException):
    """Raised by `suspend`: ends the turn (a BaseException, so that `except Exception` in the
    script does not swallow it)."""

    def __init__(self, wait: dict[str, Any]) -> None:
        super().__init__("the run is waiting")
        self.wait = wait


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a failed step is tried again: at most `limit` more times, the n-th retry after
    `delay` seconds (constant), `delay * n` (linear) or `delay * 2**(n-1)` (exponential); an
    error of a `non_retryable` type is raised at once. A wait of a second or more is durable:
    the turn ends and the run waits without a process."""

    limit: int = 3
    delay: float = 1.0
    backoff: Literal["constant", "linear", "exponential"] = "exponential"
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or not 0 <= self.limit <= 100:
            raise StepError("Retry.limit is a number of retries from 0 to 100")
        if not isinstance(self.delay, (int, float)) or not 0 <= self.delay <= 7 * 86400:
            raise StepError("Retry.delay is a number of seconds from 0 to 604800")
        if self.backoff not in ("constant", "linear", "exponential"):
            raise StepError("Retry.backoff is constant, linear or exponential")
        if isinstance(self.non_retryable, type):
            object.__setattr__(self, "non_retryable", (self.non_retryable,))

    def wait_s(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 is the first)."""
        if self.backoff == "constant":
            return float(self.delay)
        if self.backoff == "linear":
            return float(self.delay * retry)
        return float(min(self.delay * 2 ** (retry - 1), 7 * 86400))


class _Run:
    fd: int | None = None  # the child's connection to the fork server, in a Flowmill run
    stored: dict[str, str] = {}  # name -> JSON text
    seen: set[str] = set()
    seq = 0
    sleeps = 0  # sleep() calls so far: each is named by its place
    events: dict[str, int] = {}  # wait_for_event() calls so far, by type
    history: list[str] = []  # the stored steps, in the order they were stored
    reached = 0  # how many of them this replay has reached
    in_task = False  # this run carries out one task: tasks it calls run in place


def begin(fd: int | None, stored: dict[str, str], in_task: bool = False) -> None:
    """Called by the child's runner before the script runs."""
    _Run.fd, _Run.stored, _Run.seen, _Run.seq, _Run.sleeps, _Run.events = fd, dict(stored), set(), 0, 0, {}
    _Run.history, _Run.reached, _Run.in_task = [name for name in stored if records.is_step(name)], 0, in_task


def in_run() -> bool:
    """Whether a Flowmill server stores this run's steps."""
    return _Run.fd is not None


def in_task() -> bool:
    """Whether this run carries out one task of a workflow."""
    return _Run.in_task


def step(name: str, fn: Callable[..., T], *args: Any, retry: Retry | None = None, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, once per run: its result is checkpointed before the run goes on;
    with `retry`, tried again on failure as the policy says."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise StepError("a step's name is a string of 1 to 255 characters")
    if not records.is_step(name):
        raise StepError(f"the step name {name!r} starts with a reserved prefix ({', '.join(records.INTERNAL)})")
    return _step(name, fn, args, kwargs, retry, ordered=True)


def _step(name: str, fn: Callable[..., T], args: Any, kwargs: Any, retry: Retry | None, ordered: bool) -> T:
    if name in _Run.seen:
        raise StepError(f"the step {name!r} is taken twice in this run: give each step its own name")
    _Run.seen.add(name)
    stored = name in _Run.stored
    if ordered:
        reach([name] if stored else [], bool(not stored), name)
    if stored:
        return json.loads(_Run.stored[name])
    value = fn(*args, **kwargs) if retry is None else _with_retry(name, fn, args, kwargs, retry)
    checkpoint(name, value)
    return value


def reach(stored: list[str], new: bool, name: str) -> None:
    """Check that this replay reaches the run's stored steps in their order: `stored` names,
    found stored (taken together, in any order among them), then `new` ones not stored yet.
    NonDeterminismError names the step where it diverged."""
    history, at = _Run.history, _Run.reached
    if stored:
        expected = history[at:at + len(stored)]
        if sorted(expected) != sorted(stored):
            found = stored[0] if len(stored) == 1 else f"{stored[0]}..."
            where = f"{expected[0]!r}" if expected else "no more steps"
            raise NonDeterminismError(
                f"the replay reached step {found!r} where the run's history has {where} (step {at + 1} of "
                f"{len(history)}): the workflow must reach its steps in the same order on every turn")
        _Run.reached = at = at + len(stored)
    if new and at < len(history):
        raise NonDeterminismError(
            f"the replay reached a new step {name!r} where the run's history has {history[at]!r} (step {at + 1} of "
            f"{len(history)}): the workflow must reach its steps in the same order on every turn")


def _with_retry(name: str, fn: Callable[..., T], args: Any, kwargs: Any, retry: Retry) -> T:
    """`fn`'s result, tried again on failure: `retry:<name>` records {attempt, nextAt} before
    each wait; a wait of DURABLE_RETRY_S or more ends the turn until then."""
    key = f"{records.RETRY}{name}"
    state = json.loads(_Run.stored[key]) if key in _Run.stored else None
    attempt = 1
    if state is not None:
        if time.time() * 1000 < state["nextAt"]:
            suspend(until_ms=int(state["nextAt"]))
        attempt = int(state["attempt"]) + 1
    while True:
        try:
            return fn(*args, **kwargs)
        except retry.non_retryable:
            raise
        except Exception:
            if attempt > retry.limit:
                raise
            wait = retry.wait_s(attempt)
            next_at = int(time.time() * 1000 + wait * 1000)
            checkpoint(key, {"attempt": attempt, "nextAt": next_at}, replace=True)
            if wait >= DURABLE_RETRY_S:
                suspend(until_ms=next_at)
            time.sleep(wait)
            attempt += 1


def checkpoint(name: str, value: Any, replace: bool = False) -> None:
    """Store `value` as step `name`'s result; return once the server has it (or end the turn
    paused there, when somebody asked the run to pause)."""
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
    send(_Run.fd, encode_frame(Checkpoint(seq, name, msgspec.Raw(text), replace)))
    ack = read_ack(_Run.fd)
    if ack.seq != seq:
        raise StepError(f"the server acknowledged step {ack.seq}, not {seq}")
    if ack.pause:
        suspend(paused=True)


def sleep(seconds: float) -> None:
    """Wait `seconds` without holding a process: the first time, the wake time is a step."""
    _Run.sleeps += 1
    wake_ms = _step(f"{records.SLEEP}{_Run.sleeps}", lambda: int(time.time() * 1000 + seconds * 1000), (), {}, None,
                    ordered=False)
    if time.time() * 1000 < wake_ms:
        suspend(until_ms=wake_ms)


def sleep_until(when: float | datetime.datetime) -> None:
    """Wait until `when` (epoch seconds, or a datetime: naive ones are local time) without
    holding a process."""
    moment = when.timestamp() if isinstance(when, datetime.datetime) else float(when)
    _Run.sleeps += 1
    wake_ms = _step(f"{records.SLEEP}{_Run.sleeps}", lambda: int(moment * 1000), (), {}, None, ordered=False)
    if time.time() * 1000 < wake_ms:
        suspend(until_ms=wake_ms)


def wait_for_approval(name: str = "approval", timeout_s: float | None = None) -> dict[str, Any]:
    """The answer to the approval `name` ({approved, approver, payload}), waiting for it; with
    `timeout_s`, {approved: False, timedOut: True} once that has passed."""
    _check_name(name)
    return _wait_for("approval", name, f"{records.APPROVAL}{name}", timeout_s)


def wait_for_event(event_type: str, timeout: float | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
    """The next event of `event_type` sent to this run ({type, payload, sentBy}), waiting for it;
    events sent before are buffered, each taken once, in order. With `timeout` (seconds),
    EventTimeout is raised once it has passed with no event."""
    _check_name(event_type)
    limit = timeout if timeout is not None else timeout_s
    _Run.events[event_type] = _Run.events.get(event_type, 0) + 1
    found = _wait_for("event", event_type, f"{records.EVENT}{event_type}:{_Run.events[event_type]}", limit)
    if found.get("timedOut"):
        raise EventTimeout(event_type, limit if limit is not None else 0)
    return found


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise StepError("a name to wait for is 1-100 letters, digits and _ . : -")


def _wait_for(what: str, name: str, key: str, timeout_s: float | None) -> dict[str, Any]:
    """What was stored as `key`, else the end of the turn until it is. The server stores the
    timeout's answer as `key` once the deadline has passed, so that a late answer never
    changes what a replay sees."""
    if key in _Run.stored:
        _Run.seen.add(key)
        return json.loads(_Run.stored[key])
    until = None
    if timeout_s is not None:
        until = _step(f"{records.DEADLINE}{key}", lambda: int(time.time() * 1000 + timeout_s * 1000), (), {}, None,
                      ordered=False)
    if what == "approval":
        suspend(until_ms=until, approval=name)
    suspend(until_ms=until, event=name)
    raise AssertionError("unreachable")


def suspend(until_ms: int | None = None, children: str | None = None, approval: str | None = None,
            event: str | None = None, paused: bool = False, **more: Any) -> None:
    """End the turn: the run waits (without a process) for whichever comes first of a time, its
    child runs ("all" or "any"), an approval, an event; or is paused until resumed. `more`:
    what else the server is to do with the turn's end (the tasks to dispatch)."""
    wait = {k: v for k, v in (("untilMs", until_ms), ("children", children), ("approval", approval),
                              ("event", event)) if v is not None}
    wait.update(more)
    if paused:
        wait = {"paused": True}
    if not wait:
        raise StepError("suspend() needs something to wait for")
    raise Suspend(wait)
