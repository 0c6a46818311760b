"""The fork server and its children: each child runs one script, in a process of its own.

The fork server (`flowmill _forkserver`) is a long-lived process that has imported what
scripts usually need, then keeps a few children forked ahead of demand, each blocked reading
its job from a socket pair. A child runs exactly one script and exits; the fork server forks
a replacement once the run is handed over, so the fork is off the critical path of the next run.

The fork server also watches the runs, so that the Flowmill server does not have to: it
reads each child's output pipe into log lines (within the job's limits), enforces the
timeout, kills a run on request, and sees how a child ended when it reaps it. The Flowmill
server keeps one connection to it and multiplexes its runs over it: `Run` and `Cancel` go
in; `Output` and `Ended` come back. Everything is framed the same way: a 4-byte length,
then msgspec JSON.

The fork server exits when its stdin closes: that is the Flowmill server going away, even by
`kill -9`. Its children die with it (PR_SET_PDEATHSIG). A client's connection that closes
takes that client's runs with it.
"""

from __future__ import annotations

import __future__
import ast
import base64
import ctypes
import datetime
import faulthandler
import gc
import importlib
import inspect
import linecache
import marshal
import os
import resource
import selectors
import signal
import _signal
import socket
import struct
import sys
import time
import traceback
import types
import typing
from typing import Any, NoReturn

import msgspec

from app.runtimes import response
from app.runtimes.python.arguments import ArgumentError, Arguments
from app.runtimes.python.wall import IS_LINUX, WALL, Wall, orphans, within

# -- what a run is, and the frames that carry it ------------------------------------------------


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


class Output(msgspec.Struct, tag_field="t", tag="output"):
    """Fork server -> client: log lines of run `id`, as (epoch seconds, stream, text)."""

    id: int
    lines: list[tuple[float, str, str]]


class Ended(msgspec.Struct, tag_field="t", tag="ended"):
    """Fork server -> client: how run `id` ended; every line of its output was sent before."""

    id: int
    status: str  # success, error (raised by the script), timeout, cancelled, crashed
    result: msgspec.Raw = msgspec.Raw(b"null")  # with success: main's return value, as JSON
    error: dict[str, str] | None = None  # with error: name, message, traceback
    exit_reason: str = ""  # for timeout, cancelled and crashed: what happened to the process
    duration_s: float = 0.0
    args: msgspec.Raw = msgspec.Raw(b"null")  # what main was given, when a preprocessor made it (else null)


class Finished(msgspec.Struct, tag_field="t", tag="result"):
    result: msgspec.Raw  # main's return value, already JSON: passed on without decoding it again
    args: msgspec.Raw = msgspec.Raw(b"null")  # main's arguments, when a preprocessor made them


class Failed(msgspec.Struct, tag_field="t", tag="error"):
    error: dict[str, str]  # name, message, traceback
    args: msgspec.Raw = msgspec.Raw(b"null")  # main's arguments, when a preprocessor made them


ChildFrame = Finished | Failed  # what a child answers
ClientFrame = Run | Cancel  # what a client asks
ServerFrame = Output | Ended  # what the fork server tells a client

HEADER = struct.Struct(">I")
SCRIPT_MODULE = "__flowmill_script__"  # not "__main__": `if __name__ == "__main__"` blocks stay idle
MAX_ERROR_TEXT = 64 * 1024
# What a script's environment starts from; nothing else of the server's environment reaches it.
BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL",
                 "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
EXIT_RUNNER_FAILED = 70  # the runner itself failed (the job was unreadable, the server went away)

_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(ChildJob)


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


# -- the child: one run -------------------------------------------------------------------------


def _open_standard_streams() -> None:
    """sys.stdout and sys.stderr as scripts get them, made once in the fork server (in each
    child it would cost ~80 copied pages): line-buffered, so that a line reaches the log when
    it is printed, on fds 1 and 2, which each child points at its output pipe."""
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    # A segfault or os.abort() leaves its Python traceback in the run's log.
    faulthandler.enable(sys.stderr)


def _capture_output(write_end: int) -> None:
    """Point fds 1 and 2 at the output pipe, so that print(), C-level writes and subprocesses
    are all captured, in the order they were written."""
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)


# A script is compiled as if it began with `from __future__ import annotations`: main's annotations
# stay text until something asks for them (the schema is inferred from the source without running it).
_COMPILE_FLAGS = __future__.annotations.compiler_flag


def script_filename(path: str) -> str:
    """The file name a script's code and tracebacks carry, e.g. f/demo/hello.py."""
    return path if path.endswith(".py") else f"{path}.py"


def compile_script(source: str, path: str) -> bytes | None:
    """`source` compiled the way a child would, as marshal data (None if it does not compile:
    the child then reports the error). Compiled once per script version by the server, it spares
    every child the compiler, whose work is in pages a child must copy before writing them."""
    try:
        code = compile(source, script_filename(path), "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return marshal.dumps(code)


# A child talks to the fork server on a plain descriptor, not a socket object: every object a
# child builds or touches costs it copied pages.
def _read_job(fd: int) -> ChildJob:
    def exactly(size: int) -> bytes:
        data = os.read(fd, size)
        while len(data) < size:
            chunk = os.read(fd, min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError("the server closed the connection before sending the job")
            data += chunk
        return data

    (size,) = HEADER.unpack(exactly(HEADER.size))
    return _job_decoder.decode(exactly(size))


def _send(fd: int, frame: bytes) -> None:
    view = memoryview(frame)
    while view:
        view = view[os.write(fd, view):]


def _reset_environment() -> None:
    """Keep only the base environment. Done once in the fork server, not in each child: just
    after a fork every page touched is copied."""
    base = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    base.setdefault("PATH", os.defpath)
    os.environ.clear()  # also unsets them for the subprocesses the script starts
    os.environ.update(base)


def _enter(job: ChildJob, filename: str) -> None:
    """Make the process the script's: its environment, import path, argv and memory limit."""
    environ = os.environ
    for key, value in job.env.items():  # not update(): its check that env is a Mapping costs copied pages
        environ[key] = value
    sys.path[:0] = job.sys_path
    sys.argv = [filename]
    if job.memory_limit_mb:
        limit = job.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _error(name: str, message: str, trace: str = "") -> Failed:
    return Failed({"name": name, "message": message[:MAX_ERROR_TEXT], "traceback": trace[-MAX_ERROR_TEXT:]})


def _failure_of(error: BaseException, filename: str) -> Failed:
    """The error frame of an exception raised by the script, its traceback starting in the script."""
    # Free what the failing frames hold first: after a MemoryError, formatting needs memory.
    traceback.clear_frames(error.__traceback__)
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next  # the runner's frames (and asyncio's, for async main) are noise
    trace = "".join(traceback.format_exception(type(error), error, tb))
    if isinstance(error, SystemExit):
        code = "" if error.code is None else repr(error.code)
        return _error("SystemExit", f"the script called sys.exit({code})", trace)
    return _error(type(error).__name__, str(error), trace)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    result = function(*args, **kwargs)
    if isinstance(result, types.CoroutineType):
        import asyncio  # already loaded by httpx in the fork server: free

        return asyncio.run(result)
    return result


def _accepted(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments `function` takes: like Windmill, a payload's other keys (a webhook's,
    say) are left out rather than failing the run, unless it takes **kwargs."""
    code = getattr(function, "__code__", None)
    if code is not None and not isinstance(function, types.MethodType):  # a plain function: its code says
        if code.co_flags & inspect.CO_VARKEYWORDS:
            return args
        names = set(code.co_varnames[code.co_posonlyargcount: code.co_argcount + code.co_kwonlyargcount])
        return {name: value for name, value in args.items() if name in names}
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return args
    names = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {name: value for name, value in args.items() if name in names}


_COERCED = (bytes, datetime.datetime, datetime.date)


def _coerce(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """JSON carries bytes as base64 and datetimes as ISO text: give main what it declares."""
    declared = getattr(function, "__annotations__", None) or {}
    if not any(isinstance(a, str) or a in _COERCED for a in declared.values()):
        return args  # nothing to convert: skip typing.get_type_hints, which is slow
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable annotations: pass the arguments as they are
        return args
    coerced = dict(args)
    for name, value in args.items():
        wanted = hints.get(name)
        if not isinstance(value, str):
            continue
        if wanted is bytes:
            coerced[name] = base64.b64decode(value)
        elif wanted is datetime.datetime:
            coerced[name] = datetime.datetime.fromisoformat(value)  # 3.11 reads a trailing Z
        elif wanted is datetime.date:
            coerced[name] = datetime.date.fromisoformat(value)
    return coerced


def _to_json(value: Any) -> Any:
    """What msgspec does not encode by itself (it does bytes, datetimes, tuples, dataclasses)."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_result_encoder = msgspec.json.Encoder(enc_hook=_to_json)
_ENCODINGS = response.NAMES["content_transfer_encoding"]


def _mark_bytes(value: Any) -> Any:
    """A response object whose body is `bytes`: JSON carries them as base64 text, so say so
    (`flowmill_content_transfer_encoding: base64`) and its route answers the bytes themselves."""
    if (type(value) is dict and isinstance(value.get(response.BODY), (bytes, bytearray))
            and not any(name in value for name in _ENCODINGS) and not response.ALL_NAMES.isdisjoint(value)):
        return {**value, _ENCODINGS[0]: response.BASE64}
    return value


def _encode_result(value: Any, limit: int) -> Finished | Failed:
    try:
        data = _result_encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as error:
        return _error("ResultError", f"the result is not JSON-serializable: {error}")
    except MemoryError:
        return _error("MemoryError", "encoding the result as JSON exceeded the run's memory limit")
    if len(data) > limit:
        return _error("ResultTooLarge", f"the result of {len(data)} bytes exceeds the limit of {limit} bytes")
    return Finished(msgspec.Raw(data))


def _reported(kwargs: dict[str, Any], limit: int) -> msgspec.Raw:
    """main's arguments as the server keeps them, when a preprocessor made them; null when
    they have no JSON form or are too large to keep."""
    try:
        data = _result_encoder.encode(kwargs)
    except (TypeError, ValueError, OverflowError, MemoryError):
        return msgspec.Raw(b"null")
    return msgspec.Raw(data) if len(data) <= limit else msgspec.Raw(b"null")


MAX_REPORTED_ARGS = 5 * 1024 * 1024  # as the server bounds a run's arguments


def _execute(job: ChildJob, filename: str) -> Finished | Failed:
    """Run the script's entry point (after its preprocessor, given an event): the outcome,
    with the arguments main got when the preprocessor made them."""
    made: list[dict[str, Any]] = []  # main's arguments, once the preprocessor made them
    outcome = _run_entry(job, filename, made)
    if made:
        outcome.args = _reported(made[-1], MAX_REPORTED_ARGS)
    return outcome


def _run_entry(job: ChildJob, filename: str, made: list[dict[str, Any]]) -> Finished | Failed:
    linecache.cache[filename] = (len(job.source), None, job.source.splitlines(True), filename)
    module = types.ModuleType(SCRIPT_MODULE)
    module.__file__ = filename
    sys.modules[SCRIPT_MODULE] = module  # dataclasses, typing and pickle look the module up
    try:
        if job.code is not None:  # the server compiled it with the same Python (the same executable)
            code = marshal.loads(job.code)
        else:
            code = compile(job.source, filename, "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - running it is the point
        entry = module.__dict__.get(job.entrypoint)
        if not callable(entry):
            return _error("EntrypointMissing", f"the script defines no function {job.entrypoint}()")
        kwargs = job.args
        preprocessor = module.__dict__.get("preprocessor")
        if job.preprocessor_event is not None and callable(preprocessor):
            kwargs = _call(preprocessor, job.preprocessor_event)
            if not isinstance(kwargs, dict):
                return _error("PreprocessorError",
                              f"preprocessor(event) must return a dict of main's arguments, not {type(kwargs).__name__}")
            made.append(kwargs)
            if job.main_schema is not None:
                try:
                    kwargs = Arguments(job.main_schema, job.main_takes_kwargs).check(kwargs, added=("raw_string",))
                except ArgumentError as error:
                    return _error("InvalidArguments", f"the arguments preprocessor(event) returned do not fit main: "
                                                      f"{error.message}")
                made.append(kwargs)
        result = _call(entry, **_coerce(entry, _accepted(entry, kwargs)))
    except BaseException as error:  # noqa: BLE001 - whatever the script raises, SystemExit included, is its outcome
        if isinstance(error, MemoryError):
            module.__dict__.clear()  # what the script keeps globally: formatting the error needs memory
        return _failure_of(error, filename)
    return _encode_result(_mark_bytes(result), job.max_result_bytes)


def _flush_output(libc: ctypes.CDLL) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # the script closed or replaced it
            pass
    libc.fflush(None)  # what C code printed through stdio, which _exit would drop


def run_one(fd: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> bool:
    """Take one job from `fd`, run it walled off, and answer. False when the script's
    processes were left for the caller to kill (see `Wall.end_run`)."""
    try:
        job = _read_job(fd)
    except msgspec.ValidationError as error:  # a fault of the server's, said as such rather than as a crash
        _send(fd, encode_frame(_error("InvalidJob", f"the run's job is malformed: {error}")))
        return True
    if ruleset >= 0:
        try:
            wall.restrict(ruleset, job.sys_path)
        except OSError as error:  # never run a script outside its wall
            _send(fd, encode_frame(_error("SandboxError", f"the run could not be walled off: {error}")))
            return True
    me = os.getpid()
    filename = script_filename(job.path)
    _enter(job, filename)
    outcome = _execute(job, filename)
    if os.getpid() != me:  # a process the script forked, returning from main: its outcome is not the run's
        os._exit(0)
    _flush_output(libc)
    try:
        frame = encode_frame(outcome)
    except MemoryError:  # under the memory limit, a large traceback may not fit
        frame = encode_frame(_error("MemoryError", "the run's outcome did not fit in its memory limit"))
    ended = wall.end_run()  # nothing the script started outlives its run, and is gone before the answer
    # Everything the script wrote is in the pipe before the outcome is sent: the fork server,
    # once it has the outcome, reads the pipe to its end and misses nothing.
    _send(fd, frame)
    return ended


_JOB_FD = 3  # where a child keeps its end of the socket pair; every other descriptor above 2 is closed
_RULESET_FD = 4  # its Landlock ruleset, until it restricts itself with it


def _child(conn_fd: int, output: int, parent: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> NoReturn:
    """What a freshly forked child does: get ready while idle, wait for its run, run it, exit."""
    try:
        if not _wait_and_run(conn_fd, output, parent, libc, wall, ruleset):
            # What the script started is in the group: kill it, and this process with it.
            os.killpg(0, signal.SIGKILL)
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a child must never return into the fork server's loop
        traceback.print_exc()  # into the run's log once the pipe is in place, else the fork server's
    finally:
        os._exit(EXIT_RUNNER_FAILED)


def _wait_and_run(conn_fd: int, output: int, parent: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> bool:
    signal.set_wakeup_fd(-1)
    _capture_output(output)
    if ruleset == _JOB_FD:
        ruleset = os.dup(ruleset)
    os.dup2(conn_fd, _JOB_FD)
    if ruleset >= 0:
        if ruleset != _RULESET_FD:
            os.dup2(ruleset, _RULESET_FD)
        ruleset = _RULESET_FD
    # The fork server's other descriptors (its listener, its clients, other runs' pipes, the
    # folders its rules name) are not the script's business.
    os.closerange(_RULESET_FD + 1 if ruleset >= 0 else _JOB_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the fork server's stdin is its parent's pipe: not the script's
    os.close(devnull)
    # _signal, not signal: its wrapper turns each answer into an enum, which a child pays in copied pages.
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(signal.SIGINT, signal.default_int_handler)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # an idle child must not outlive the fork server
    if os.getppid() != parent:  # the fork server died before the line above
        return True
    os.setsid()  # its own process group: a kill of the group reaches whatever the script starts
    wall.child_ready()
    return run_one(_JOB_FD, libc, wall, ruleset)


# -- the fork server ----------------------------------------------------------------------------


MAX_LINE = 16 * 1024
FORK_BATCH = 4  # children forked in a row while runs are in flight (see top_up)
DRAIN_S = 0.5  # after a run ends: how long to keep reading output that is still being written


class _Output:
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


class _Child:
    """A forked child: its pid, the fork server's end of its socket pair, its output pipe."""

    __slots__ = ("pid", "conn", "output_fd")

    def __init__(self, pid: int, conn: socket.socket, output_fd: int) -> None:
        self.pid = pid
        self.conn = conn
        self.output_fd = output_fd


class _Client:
    """A connection from a Flowmill server; its runs end with it."""

    SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long is dropped

    def __init__(self, conn: socket.socket) -> None:
        conn.settimeout(self.SEND_TIMEOUT_S)
        self.conn = conn
        self.frames = FrameReader(64 * 1024 * 1024)
        self.runs: dict[int, _Running] = {}
        self.gone = False

    def send(self, message: Any) -> None:
        if self.gone:
            return
        try:
            self.conn.sendall(encode_frame(message))
        except OSError:
            self.gone = True


class _Running:
    """A run in a child, as the fork server watches it."""

    def __init__(self, client: _Client, request: Run, child: _Child) -> None:
        self.client = client
        self.id = request.id
        self.child = child
        self.started = time.monotonic()
        self.deadline = self.started + request.timeout_s if request.timeout_s is not None else None
        self.timeout_s = request.timeout_s
        self.output = _Output(child.output_fd, request.max_log_lines, request.max_log_bytes)
        self.answer = FrameReader(request.max_result_bytes + 16 * MAX_ERROR_TEXT)
        self.output_open = True
        self.conn_open = True
        self.exit_status: int | None = None


_child_frames = msgspec.json.Decoder(ChildFrame)
_client_frames = msgspec.json.Decoder(ClientFrame)


class _ForkServer:
    """The fork server's loop: idle children, clients, and the runs they asked for."""

    def __init__(self, listener: socket.socket, idle: int, libc: ctypes.CDLL, wall: Wall,
                 run_root: str | None, client_pid: int) -> None:
        self.listener = listener
        self.idle_target = max(1, idle)  # with none, a run would wait for a fork
        self.libc = libc
        self.wall = wall
        self.run_root = run_root  # each child's own folder (its cwd, HOME and TMPDIR) is made in it
        self.client_pid = client_pid  # the Flowmill server: the one process that may connect
        self.selector = selectors.DefaultSelector()
        self.idle: list[_Child] = []
        self.running: dict[int, _Running] = {}  # by pid
        self.clients: set[_Client] = set()
        self.me = os.getpid()
        self.folders: dict[int, str] = {}  # each live child's own folder, by pid
        self.leftover_folders: list[str] = []  # not removed yet (a process of the run still wrote in it)
        self.slots: set[int] = set()  # the numbers of the children's folders that exist
        self.killed: set[int] = set()  # children killed by the fork server, not reaped yet
        self.sweeping = False  # what killed runs left behind is being swept

    # -- children --------------------------------------------------------------------------------

    def fork(self) -> _Child | None:
        folder, ruleset = self._own_folder()
        if folder is None and self.run_root is not None:
            return None
        ours, theirs = socket.socketpair()
        output_r, output_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as error:  # out of processes or memory: try again on the next round
            print(f"flowmill fork server: fork failed: {error}", file=sys.stderr, flush=True)
            for fd in (output_r, output_w):
                os.close(fd)
            ours.close()
            theirs.close()
            if ruleset >= 0:
                os.close(ruleset)
            if folder is not None:
                self._remove(folder)
            return None
        if pid == 0:
            _child(theirs.fileno(), output_w, self.me, self.libc, self.wall, ruleset)
        theirs.close()
        os.close(output_w)
        if ruleset >= 0:
            os.close(ruleset)
        if folder is not None:
            self.folders[pid] = folder
            self.wall.limit_processes(int(folder.rpartition("/")[2]), pid)
        return _Child(pid, ours, output_r)

    def _own_folder(self) -> tuple[str | None, int]:
        """A new child's folder (its cwd, HOME and TMPDIR), and its Landlock ruleset, which grants
        that folder."""
        if self.run_root is None:
            return None, -1
        # The first number not in use: names come back, and so do the environment's strings (glibc
        # keeps every value ever given to setenv, so new names each time would grow it forever).
        slot = 1
        while slot in self.slots:
            slot += 1
        folder = f"{self.run_root}/{slot}"
        try:
            os.mkdir(folder, 0o700)
            fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                ruleset = self.wall.ruleset(fd)
            finally:
                os.close(fd)
        except OSError as error:
            print(f"flowmill fork server: cannot prepare a child's wall: {error}", file=sys.stderr, flush=True)
            _remove_folder(folder)
            return None, -1
        os.environ["HOME"] = os.environ["TMPDIR"] = folder  # set here: in the child it costs copied pages
        os.chdir(folder)
        self.slots.add(slot)
        return folder, ruleset

    def top_up(self) -> None:
        """Fork children ahead of demand. While runs are in flight, fork only once none is
        ready, then `FORK_BATCH` at once: each fork costs the fork server a copy of every page it
        writes next (~60 per fork, ~100 more once per batch), so forks in a row share that cost;
        and a fork holds back the answers the fork server passes on, so they wait once per batch."""
        if self.running:
            if self.idle:
                return
            target = FORK_BATCH
        else:
            target = self.idle_target
        while len(self.idle) < target:
            child = self.fork()
            if child is None:
                return
            self.idle.append(child)

    def reap(self) -> None:
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, _REAP_FLAGS)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            self.killed.discard(pid)
            folder = self.folders.pop(pid, None)
            if folder is not None:  # one of ours (not a process a killed run left behind)
                if os.WIFSIGNALED(status) and self.wall.subreaper:
                    self.sweeping = True  # what it started may have left its group
                self._remove(folder)
            run = self.running.get(pid)
            if run is not None:
                run.exit_status = status
                self.read_answer(run)  # what it sent just before it exited
                if pid in self.running:
                    self.end(run, "crashed", exit_reason=describe_exit(status))
                continue
            for child in self.idle:
                if child.pid == pid:  # an idle child that died is replaced like one that ran
                    self.idle.remove(child)
                    child.conn.close()
                    os.close(child.output_fd)
                    break
        if reaped and self.leftover_folders:
            leftover, self.leftover_folders = self.leftover_folders, []
            for folder in leftover:
                self._remove(folder)

    def _remove(self, folder: str) -> None:
        if _remove_folder(folder):
            self.slots.discard(int(folder.rpartition("/")[2]))
        else:
            self.leftover_folders.append(folder)

    def sweep(self) -> None:
        """Kill the processes that killed runs left behind: reparented to the fork server (their
        subreaper), they are its children without being runs. Killing one reparents its own
        children here in turn: sweep until a look finds none and every killed child is reaped."""
        if self.wall.proc_fd < 0:
            self.sweeping = False
            return
        known = {child.pid for child in self.idle} | set(self.running)
        found = orphans(self.wall.proc_fd, self.me, known)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not found and not self.killed:
            self.sweeping = False

    def kill_all(self) -> None:
        for child in [*self.idle, *(run.child for run in self.running.values())]:
            _kill_group(child.pid)
        # Then whatever is left, till none is: the fork server is going, and its runs with it.
        deadline = time.monotonic() + 2.0
        while self.wall.proc_fd >= 0 and time.monotonic() < deadline:
            left = orphans(self.wall.proc_fd, self.me, set())
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
            _reap_all()

    # -- clients ---------------------------------------------------------------------------------

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        if not _from(conn, self.client_pid):  # a run that found the socket, say: it gets nothing
            conn.close()
            return
        client = _Client(conn)
        self.clients.add(client)
        self.selector.register(conn, selectors.EVENT_READ, client)

    def from_client(self, client: _Client) -> None:
        try:
            data = client.conn.recv(1 << 16)
            bodies = client.frames.feed(data) if data else []
            requests = [_client_frames.decode(body) for body in bodies]
        except (OSError, ValueError, msgspec.DecodeError):
            data, requests = b"", []
        for request in requests:
            if isinstance(request, Run):
                self.start(client, request)
            elif request.id in client.runs:
                self.kill(client.runs[request.id], "cancelled", "killed: the run was cancelled")
        if not data or client.gone:
            self.drop(client)

    def drop(self, client: _Client) -> None:
        """The client went away: so do its runs."""
        client.gone = True
        for run in list(client.runs.values()):
            self.kill(run, "cancelled", "killed: the client went away")
        self.clients.discard(client)
        self.selector.unregister(client.conn)
        client.conn.close()

    # -- runs ------------------------------------------------------------------------------------

    def start(self, client: _Client, request: Run) -> None:
        child = self.idle.pop() if self.idle else self.fork()
        if child is None:
            client.send(Ended(request.id, "crashed", exit_reason="the fork server could not fork a child"))
            return
        run = _Running(client, request, child)
        self.running[child.pid] = run
        client.runs[run.id] = run
        try:
            child.conn.sendall(HEADER.pack(len(request.job)) + bytes(request.job))  # the child is waiting for it
        except OSError:
            pass  # it died while idle: its reaping ends the run
        self.selector.register(child.conn, selectors.EVENT_READ, run)
        self.selector.register(child.output_fd, selectors.EVENT_READ, ("output", run))

    def read_answer(self, run: _Running) -> None:
        """Read what the child sent; end the run once it has said how it ended."""
        child = run.child
        while run.conn_open:
            try:
                data = child.conn.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                run.conn_open = False
                self.selector.unregister(child.conn)
                if run.exit_status is not None:
                    self.end(run, "crashed", exit_reason=describe_exit(run.exit_status))
                return  # otherwise its reaping says how it ended
            try:
                bodies = run.answer.feed(data)
                frames = [_child_frames.decode(body) for body in bodies]
            except (ValueError, msgspec.DecodeError) as error:
                self.kill(run, "crashed", f"the child sent an unreadable message: {error}")
                return
            for frame in frames:
                if isinstance(frame, Finished):
                    self.end(run, "success", result=frame.result, args=frame.args)
                else:
                    self.end(run, "error", error=frame.error, args=frame.args)
                return

    def from_output(self, run: _Running) -> None:
        if not run.output.read():
            self._close_output(run)

    def _close_output(self, run: _Running) -> None:
        if run.output_open:
            run.output_open = False
            self.selector.unregister(run.output.fd)

    def kill(self, run: _Running, status: str, reason: str) -> None:
        _kill_group(run.child.pid)
        if self.wall.subreaper:
            self.killed.add(run.child.pid)
            self.sweeping = True  # what left the group is reparented here once the child is gone
        self.end(run, status, exit_reason=reason)

    def end(self, run: _Running, status: str, result: msgspec.Raw = msgspec.Raw(b"null"),
            error: dict[str, str] | None = None, exit_reason: str = "", args: msgspec.Raw = msgspec.Raw(b"null")) -> None:
        """Send the rest of the output, then the outcome; forget the run."""
        if run.output_open:
            run.output.drain()  # the child wrote everything before its outcome: read it all
            self._close_output(run)
        os.close(run.output.fd)
        run.output.finish()
        self.send_output(run)
        run.client.send(Ended(run.id, status, result, error, exit_reason, time.monotonic() - run.started, args))
        if run.conn_open:
            run.conn_open = False
            self.selector.unregister(run.child.conn)
        run.child.conn.close()
        self.running.pop(run.child.pid, None)
        run.client.runs.pop(run.id, None)

    def send_output(self, run: _Running) -> None:
        if run.output.pending:
            lines, run.output.pending = run.output.pending, []
            run.client.send(Output(run.id, lines))

    def check_deadlines(self, now: float) -> float:
        """Kill the runs past their timeout; seconds until the next deadline (at most 1)."""
        wait = 1.0
        for run in list(self.running.values()):
            if run.deadline is None:
                continue
            if now >= run.deadline:
                self.kill(run, "timeout", f"killed: the run exceeded its timeout of {run.timeout_s:g} s")
            else:
                wait = min(wait, run.deadline - now)
        return wait


_REAP_FLAGS = os.WNOHANG | (WALL if IS_LINUX else 0)  # also children cloned without SIGCHLD
SWEEP_S = 0.02  # between two looks for what killed runs left behind


def _from(conn: socket.socket, client_pid: int) -> bool:
    """Whether `conn` comes from process `client_pid` of this user (the kernel says, not the peer)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # macOS: the socket's folder (0700) is the only check
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid == client_pid and uid == os.getuid()


def _remove_folder(folder: str) -> bool:
    """Remove a child's folder and what its run left in it; False if it cannot be yet."""
    try:
        os.rmdir(folder)  # most runs write nothing there
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    import shutil  # once, in the fork server, the first time a run leaves files

    def make_ours(function: Any, path: str, error: Any) -> None:
        # A folder the script made unreadable or read-only is ours: make it removable again.
        for place in (path, os.path.dirname(path)):
            if os.path.isdir(place) and not os.path.islink(place):
                try:
                    os.chmod(place, 0o700)
                except OSError:
                    pass

    for _attempt in range(8):  # each pass opens one more level of folders made unreadable
        shutil.rmtree(folder, onerror=make_ours)
        if not os.path.lexists(folder):
            return True
    return False


def _make_run_root(denied: list[str]) -> str | None:
    """The folder of this fork server's children's own folders: in the system's temporary
    folder, never inside the data dir. Folders left by fork servers that were killed go."""
    for base in (os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp"):
        base = os.path.realpath(base) if base else ""
        if not base or not os.path.isdir(base) or any(within(base, folder) for folder in denied):
            continue
        _remove_stale_roots(base)
        root = os.path.join(base, f"{RUN_ROOT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(root, 0o700)
        except OSError:
            continue
        return root
    return None


RUN_ROOT_PREFIX = "flowmill-runs-"


def _remove_stale_roots(base: str) -> None:
    try:
        entries = [entry for entry in os.listdir(base) if entry.startswith(RUN_ROOT_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry[len(RUN_ROOT_PREFIX):].partition("-")[0]
        path = os.path.join(base, entry)
        try:
            if not pid.isdigit() or os.lstat(path).st_uid != os.getuid() or os.path.islink(path):
                continue
            os.kill(int(pid), 0)
            continue  # its fork server still runs
        except ProcessLookupError:
            _remove_folder(path)
        except OSError:
            continue


def _reap_all() -> None:
    """Reap every child that has ended, keeping no account (the fork server is going)."""
    while True:
        try:
            if os.waitpid(-1, _REAP_FLAGS)[0] == 0:
                return
        except ChildProcessError:
            return


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # the group first: it holds what the script started
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def describe_exit(status: int) -> str:
    """A wait status in words: "killed by signal SIGABRT", "exited with code 1"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by signal {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with code {os.WEXITSTATUS(status)}"


# What the lean fork server imports: the standard library's cheap modules that scripts use most.
# A script that imports nothing else (and has no async def, which would import asyncio) runs
# from the lean fork server: a third of the memory to copy, so its fork and its child's exit
# cost less (measured: trivial runs at 2 at once, 405-461 -> 503-522 a second). Not random: it
# reseeds itself in every child that is forked once it is loaded (~45 copied pages a run).
LIGHT_MODULES = frozenset({
    "__future__", "base64", "collections", "copy", "dataclasses", "datetime", "enum", "functools", "heapq",
    "itertools", "json", "math", "operator", "os", "pprint", "re", "string", "struct", "sys", "textwrap",
    "time", "typing", "zlib",
})


def is_light(source: str) -> bool:
    """Whether `source` can run from the lean fork server (see LIGHT_MODULES)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef):
            return False
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["."]
        else:
            continue
        if any(name.split(".")[0] not in LIGHT_MODULES for name in names):
            return False
    return True


def _preload(lean: bool, libc: ctypes.CDLL) -> None:
    """Import, once, what scripts import most, so that every child has it for free: the light
    modules in a lean fork server, and httpx and wmill as well in the full one."""
    for name in sorted(LIGHT_MODULES):
        importlib.import_module(name)
    if not lean:
        # httpx imports its command line (rich, click, pygments: ~30 ms, ~5 MB) when those are
        # installed; scripts never use it, so keep it out (it stays importable afterwards).
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
        try:
            import httpx  # noqa: F401
            import wmill  # noqa: F401
        except ImportError:
            pass
        finally:
            del sys.modules["httpx._main"]
    # Look the functions of libc that children call up and call them once here: ctypes builds a
    # function on its first use, and in every child that work would copy ~45 pages.
    libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    libc.fflush(None)


def _listen(path: str, backlog: int) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)  # left by a fork server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(backlog)
    return listener


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(0)


NICENESS = 10


def serve(socket_path: str, idle: int, ready_fd: int | None = None, lean: bool = False, walled: bool = True,
          denied: list[str] | None = None, max_file_bytes: int | None = None, max_processes: int | None = None,
          client_pid: int | None = None) -> None:
    """The fork server's main loop (the hidden `flowmill _forkserver` command): keep `idle`
    children ready, serve clients on `socket_path`, write one byte to `ready_fd` once runs can
    be served (then the line that says which walls hold), and end when stdin closes or on
    SIGTERM. A `lean` one preloads only the light modules. Children are walled off
    (`walled`: see wall.py) from the `denied` folders (the data dir) and from each other; only
    `client_pid` (default: the parent) may connect."""
    # User code yields the CPU to the server when both want it: accepting a request (and
    # committing its run) stays fast under load, and queued runs use what is left.
    os.nice(NICENESS)
    socket_path = os.path.abspath(socket_path)  # the cwd changes: it is each new child's folder
    client_pid = client_pid or os.getppid()
    denied = [os.path.realpath(path) for path in denied or ()]
    run_root = _make_run_root(denied) if walled else None
    # Sealed before the imports: a probe forks, and a smaller process forks faster.
    wall = Wall(ctypes.CDLL(None, use_errno=True), denied + ([run_root] if run_root else []), walled, max_file_bytes,
                max_processes)
    wall.seal_fork_server()
    walls = wall.describe()
    print(f"flowmill fork server: {walls}", file=sys.stderr, flush=True)
    libc = ctypes.CDLL(None, use_errno=True)  # for prctl and fflush in the children
    _preload(lean, libc)
    wall.use(libc)
    _reset_environment()
    _open_standard_streams()
    listener = _listen(socket_path, 256)
    wake_r, wake_w = os.pipe()  # a SIGCHLD wakes the selector through this
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for Flowmill, which then stops us
    server = _ForkServer(listener, idle, libc, wall, run_root, client_pid)
    parent_pipe = sys.stdin.fileno()
    selector = server.selector
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    selector.register(parent_pipe, selectors.EVENT_READ, "parent")
    # What is loaded now is shared with every child: keep the collector from touching it (and
    # so copying its pages) in each of them. Hand back the memory that importing freed (the
    # compiler's, when there is no bytecode cache): every fork would copy its page tables.
    gc.collect()
    gc.freeze()
    libc.malloc_trim(0)
    try:
        while True:
            server.top_up()
            if ready_fd is not None:
                os.write(ready_fd, b"1" + walls.encode()[:2048])
                os.close(ready_fd)
                ready_fd = None
            wait = server.check_deadlines(time.monotonic())
            if server.sweeping:
                wait = min(wait, SWEEP_S)
            for key, _events in selector.select(wait):
                what = key.data
                if what == "wake":
                    os.read(wake_r, 4096)
                elif what == "accept":
                    server.accept()
                elif what == "parent":
                    if not os.read(parent_pipe, 4096):
                        return  # the Flowmill server is gone
                elif isinstance(what, _Client):
                    if not what.gone:
                        server.from_client(what)
                elif isinstance(what, _Running):
                    if what.child.pid in server.running:
                        server.read_answer(what)
                elif isinstance(what, tuple):
                    if what[1].output_open:
                        server.from_output(what[1])
            server.reap()
            if server.sweeping:
                server.sweep()
            for run in list(server.running.values()):
                server.send_output(run)
            for client in [client for client in server.clients if client.gone]:  # a send to it failed
                server.drop(client)
    finally:
        server.kill_all()
        server.wall.release_processes()
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        if run_root is not None:
            _remove_folder(run_root)


def main(argv: list[str]) -> int:
    """`flowmill _forkserver ...`, dispatched before the rest of Flowmill is imported: what the
    fork server imports, every fork copies."""
    import argparse

    parser = argparse.ArgumentParser(prog="flowmill _forkserver")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--idle", type=int, default=2)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--lean", action="store_true")
    parser.add_argument("--no-wall", action="store_true", help="run scripts NOT walled off (unsafe: measurements only)")
    parser.add_argument("--deny", action="append", default=[], help="a folder no run may read or write (the data dir)")
    parser.add_argument("--max-file-bytes", type=int, default=None)
    parser.add_argument("--max-processes", type=int, default=None)
    parser.add_argument("--client-pid", type=int, default=None, help="the one process that may connect (default: the parent)")
    args = parser.parse_args(argv)
    serve(args.socket, args.idle, args.ready_fd, args.lean, not args.no_wall, args.deny, args.max_file_bytes,
          args.max_processes, args.client_pid)
    return 0
