"""What the Flowmill server, the fork server and a child send each other.

The Flowmill server keeps one connection to the fork server and multiplexes its runs over it:
`Run`, `Cancel` and `Proceed` go in; `Output`, `Step` and `Ended` come back. The fork server
hands a run's job (`ChildJob`, passed on as the server encoded it) to a child, which ends with
`Finished`, `Failed` or `Suspended` (the turn is over: the run waits for something).

During its run a child may send `Checkpoint`s: a named step's JSON result. The fork server
passes each on as a `Step`; the Flowmill server commits it, then answers `Proceed`, which the
fork server hands the child as an `Ack`: the child goes on only once its step is stored. The
answer says too whether somebody asked the run to pause: the child then ends its turn there.
Everything is framed the same way: a 4-byte length, then msgspec JSON.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec


class ChildJob(msgspec.Struct, kw_only=True):
    """One run of a script, as the Flowmill server hands it to a child."""

    source: str
    path: str  # the script's display path, e.g. f/demo/hello: tracebacks name it
    args: dict[str, Any]
    env: dict[str, str]
    sys_path: list[str] = msgspec.field(default_factory=list)
    timeout_s: float | None = None  # enforced by the fork server, which kills the child
    memory_limit_mb: int | None = None
    preprocessor_event: dict[str, Any] | None = None
    max_result_bytes: int = 10 * 1024 * 1024
    max_log_lines: int = 20_000  # the log limits are applied by the server, which reads the pipe
    max_log_bytes: int = 8 * 1024 * 1024
    entrypoint: str = "main"
    code: bytes | None = None  # `source` compiled by `compile_script`: else the child compiles it
    # With a preprocessor_event: main's schema and whether it takes **kwargs, to check what the
    # preprocessor returns against (the server checks every other run's arguments before it exists).
    main_schema: dict[str, Any] | None = None
    main_takes_kwargs: bool = False
    # The run's stored checkpoints (name -> JSON text of its result), replayed by its steps, in
    # the order they were stored; for a task of a Windmill workflow, its parent's.
    steps: dict[str, str] = msgspec.field(default_factory=dict)
    # A run that carries out one task of a Windmill workflow (`wmill.task`): the task's step key.
    wac_executing: str | None = None
    # A run that carries out one task of a Flowmill workflow (`flowmill.task`): the function
    # (at the script's top level) whose body it runs with `args`.
    task_function: str | None = None


class Run(msgspec.Struct, tag_field="t", tag="run"):
    """Client -> fork server: start `job` (an encoded ChildJob, handed to the child as it is)."""

    id: int
    job: msgspec.Raw
    timeout_s: float | None = None
    max_log_lines: int = 20_000
    max_log_bytes: int = 8 * 1024 * 1024
    max_result_bytes: int = 10 * 1024 * 1024


class Cancel(msgspec.Struct, tag_field="t", tag="cancel"):
    """Client -> fork server: kill run `id`; its `Ended` says cancelled."""

    id: int


class Proceed(msgspec.Struct, tag_field="t", tag="proceed"):
    """Client -> fork server: step `seq` of run `id` is stored; its child may go on (or, with
    `pause`, end its turn paused)."""

    id: int
    seq: int
    pause: bool = False


class Output(msgspec.Struct, tag_field="t", tag="output"):
    """Fork server -> client: log lines of run `id`, as (epoch seconds, stream, text)."""

    id: int
    lines: list[tuple[float, str, str]]


class Step(msgspec.Struct, tag_field="t", tag="step"):
    """Fork server -> client: run `id` reached step `seq`, `name`; store it, then `Proceed`."""

    id: int
    seq: int
    name: str
    result: msgspec.Raw
    replace: bool = False


class Ended(msgspec.Struct, tag_field="t", tag="ended"):
    """Fork server -> client: how run `id` ended; every line of its output was sent before."""

    id: int
    status: str  # success, error (raised by the script), timeout, cancelled, crashed, suspended
    result: msgspec.Raw = msgspec.Raw(b"null")  # with success: main's return value, as JSON
    error: dict[str, str] | None = None  # with error: name, message, traceback
    exit_reason: str = ""  # for timeout, cancelled and crashed: what happened to the process
    duration_s: float = 0.0
    args: msgspec.Raw = msgspec.Raw(b"null")  # what main was given, when a preprocessor made it (else null)
    wait: dict[str, Any] | None = None  # with suspended: what the run waits for (see Suspended)


class Finished(msgspec.Struct, tag_field="t", tag="result"):
    """Child -> fork server: main returned."""

    result: msgspec.Raw  # main's return value, already JSON: passed on without decoding it again
    args: msgspec.Raw = msgspec.Raw(b"null")  # main's arguments, when a preprocessor made them


class Failed(msgspec.Struct, tag_field="t", tag="error"):
    """Child -> fork server: the script (or the runner, before it) raised."""

    error: dict[str, str]  # name, message, traceback
    args: msgspec.Raw = msgspec.Raw(b"null")  # main's arguments, when a preprocessor made them


class Checkpoint(msgspec.Struct, tag_field="t", tag="checkpoint"):
    """Child -> fork server: step `seq` (from 0, in the order the run reaches them), `name`,
    ended with `result` (JSON); the child then waits for its `Ack`. `replace`: a record that
    changes (a step's retry state) takes the new result rather than keeping the first."""

    seq: int
    name: str
    result: msgspec.Raw
    replace: bool = False


class Suspended(msgspec.Struct, tag_field="t", tag="suspended"):
    """Child -> fork server: the turn is over; the run waits. `wait`: {untilMs?, children?
    ("all" | "any"), approval?, event?}, or {"paused": true}. Its steps are stored."""

    wait: dict[str, Any]


class Ack(msgspec.Struct, tag_field="t", tag="ack"):
    """Fork server -> child: step `seq` is stored; go on, or, with `pause`, end the turn paused."""

    seq: int
    pause: bool = False


ChildFrame = Finished | Failed | Suspended | Checkpoint  # what a child sends
ClientFrame = Run | Cancel | Proceed  # what a client asks
ServerFrame = Output | Step | Ended  # what the fork server tells a client

HEADER = struct.Struct(">I")
MAX_ERROR_TEXT = 64 * 1024  # a Failed's message and traceback are cut to this

_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(ChildJob)
child_frames = msgspec.json.Decoder(ChildFrame)
ack_frames = msgspec.json.Decoder(Ack)
client_frames = msgspec.json.Decoder(ClientFrame)


def encode_frame(message: Any) -> bytes:
    """A frame: the length of the JSON text, then the text."""
    data = _encoder.encode(message)
    return HEADER.pack(len(data)) + data


def run_frame(run_id: int, job: ChildJob) -> bytes:
    """The `Run` frame of `job`."""
    return encode_frame(Run(run_id, msgspec.Raw(_encoder.encode(job)), job.timeout_s, job.max_log_lines,
                            job.max_log_bytes, job.max_result_bytes))


class FrameReader:
    """Splits a byte stream into frame bodies; refuses a frame bigger than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        bodies = []
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > self.limit:
                raise ValueError(f"a message of {size} bytes, past any limit")
            if len(self.buffer) < HEADER.size + size:
                break
            bodies.append(bytes(self.buffer[HEADER.size: HEADER.size + size]))
            del self.buffer[: HEADER.size + size]
        return bodies


# -- the child's end: a plain descriptor, not a socket object, since every object a child
# builds or touches costs it copied pages --------------------------------------------------------


def _read_frame(fd: int) -> bytes:
    """The body of the next frame on `fd` (blocking)."""
    def exactly(size: int) -> bytes:
        data = os.read(fd, size)
        while len(data) < size:
            chunk = os.read(fd, min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError("the fork server closed the connection")
            data += chunk
        return data

    (size,) = HEADER.unpack(exactly(HEADER.size))
    return exactly(size)


def read_job(fd: int) -> ChildJob:
    """The job the fork server sends a child on `fd` (blocking)."""
    return _job_decoder.decode(_read_frame(fd))


def read_ack(fd: int) -> Ack:
    """The fork server's word that a step is stored (blocking)."""
    return ack_frames.decode(_read_frame(fd))


def send(fd: int, frame: bytes) -> None:
    """Write all of `frame` to `fd`."""
    view = memoryview(frame)
    while view:
        view = view[os.write(fd, view):]
