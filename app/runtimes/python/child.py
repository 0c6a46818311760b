"""The fork server and its children: each child runs one script, in a process of its own.

The fork server (`flowmill _forkserver`) is a long-lived process that has imported what
scripts usually need, then keeps a few children forked ahead of demand, each blocked in
`accept()` on a Unix socket. The child that accepts a connection runs exactly one script and
exits; it tells the fork server at once, which forks a replacement, so the fork is off the
critical path of the next run. The fork server reaps its children and answers, on a second
socket, how one of them ended, for the Flowmill server to say why a run died.

A child talks to the Flowmill server in frames (a 4-byte length, then msgspec JSON): it reads
the job, answers `Started` with its pid and, attached to that frame, the read end of the pipe
that its stdout and stderr are redirected to; then `Finished` or `Failed`. The Flowmill server
reads the pipe itself, so output written just before a crash is not lost with the child.

The fork server exits when its stdin closes: that is the Flowmill server going away, even by
`kill -9`. Its children die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import array
import base64
import collections
import ctypes
import dataclasses
import datetime
import faulthandler
import gc
import inspect
import linecache
import os
import resource
import select
import signal
import socket
import struct
import sys
import traceback
import types
import typing
from typing import Any, NoReturn

import msgspec

# -- what a run is, and the frames that carry it ------------------------------------------------


@dataclasses.dataclass
class ChildJob:
    """One run of a script, as the Flowmill server hands it to a child."""

    source: str
    path: str  # the script's display path, e.g. f/demo/hello: tracebacks name it
    args: dict[str, Any]
    env: dict[str, str]
    sys_path: list[str] = dataclasses.field(default_factory=list)
    timeout_s: float | None = None  # enforced by the Flowmill server, which kills the child
    memory_limit_mb: int | None = None
    preprocessor_event: dict[str, Any] | None = None
    max_result_bytes: int = 10 * 1024 * 1024
    max_log_lines: int = 20_000  # the log limits are applied by the server, which reads the pipe
    max_log_bytes: int = 8 * 1024 * 1024
    entrypoint: str = "main"


class Started(msgspec.Struct, tag_field="t", tag="started"):
    """The child has the job; the read end of its output pipe travels with this frame."""

    pid: int


class Finished(msgspec.Struct, tag_field="t", tag="result"):
    result: msgspec.Raw  # main's return value, already JSON: passed on without decoding it again


class Failed(msgspec.Struct, tag_field="t", tag="error"):
    error: dict[str, str]  # name, message, traceback


Frame = Started | Finished | Failed

HEADER = struct.Struct(">I")
SCRIPT_MODULE = "__flowmill_script__"  # not "__main__": `if __name__ == "__main__"` blocks stay idle
MAX_ERROR_TEXT = 64 * 1024
# What a script's environment starts from; nothing else of the server's environment reaches it.
BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL",
                 "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
PR_SET_PDEATHSIG = 1
EXIT_RUNNER_FAILED = 70  # the runner itself failed (the job was unreadable, the server went away)

_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(ChildJob)


def encode_frame(message: Any) -> bytes:
    """A frame: the length of the JSON text, then the text."""
    data = _encoder.encode(message)
    return HEADER.pack(len(data)) + data


# -- the child: one run -------------------------------------------------------------------------


def _capture_output() -> int:
    """Point fds 1 and 2 at one pipe, so that print(), C-level writes and subprocesses are all
    captured, in the order they were written; return the pipe's read end."""
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    # Line-buffered, so that a line reaches the log when it is printed; they live as long as the process.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    # A segfault or os.abort() leaves its Python traceback in the run's log.
    faulthandler.enable(sys.stderr)
    return read_end


def _read_job(conn: socket.socket) -> ChildJob:
    def exactly(size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = conn.recv(min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError("the server closed the connection before sending the job")
            data += chunk
        return bytes(data)

    (size,) = HEADER.unpack(exactly(HEADER.size))
    return _job_decoder.decode(exactly(size))


def _reset_environment() -> None:
    """Keep only the base environment. Done while idle, as it is the same for every run and,
    just after the fork, slow: every page it touches is copied."""
    base = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    base.setdefault("PATH", os.defpath)
    os.environ.clear()  # also unsets them for the subprocesses the script starts
    os.environ.update(base)


def _enter(job: ChildJob, filename: str) -> None:
    """Make the process the script's: its environment, import path, argv and memory limit."""
    os.environ.update(job.env)
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
    if inspect.iscoroutine(result):
        import asyncio  # already loaded by httpx in the fork server: free

        return asyncio.run(result)
    return result


def _accepted(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments `function` takes: like Windmill, a payload's other keys (a webhook's,
    say) are left out rather than failing the run, unless it takes **kwargs."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return args
    names = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {name: value for name, value in args.items() if name in names}


def _coerce(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """JSON carries bytes as base64 and datetimes as ISO text: give main what it declares."""
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


def _execute(job: ChildJob, filename: str) -> Finished | Failed:
    """Run the script's entry point (after its preprocessor, given an event): the outcome."""
    linecache.cache[filename] = (len(job.source), None, job.source.splitlines(True), filename)
    module = types.ModuleType(SCRIPT_MODULE)
    module.__file__ = filename
    sys.modules[SCRIPT_MODULE] = module  # dataclasses, typing and pickle look the module up
    try:
        exec(compile(job.source, filename, "exec"), module.__dict__)  # noqa: S102 - running it is the point
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
        result = _call(entry, **_coerce(entry, _accepted(entry, kwargs)))
    except BaseException as error:  # noqa: BLE001 - whatever the script raises, SystemExit included, is its outcome
        if isinstance(error, MemoryError):
            module.__dict__.clear()  # what the script keeps globally: formatting the error needs memory
        return _failure_of(error, filename)
    return _encode_result(result, job.max_result_bytes)


def _flush_output(libc: ctypes.CDLL) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # the script closed or replaced it
            pass
    libc.fflush(None)  # what C code printed through stdio, which _exit would drop


def run_one(conn: socket.socket, output: int, libc: ctypes.CDLL) -> None:
    """Take one job from `conn`, run it, and answer."""
    try:
        job = _read_job(conn)
    except msgspec.ValidationError as error:  # a fault of the server's, said as such rather than as a crash
        conn.sendall(encode_frame(_error("InvalidJob", f"the run's job is malformed: {error}")))
        return
    me = os.getpid()
    conn.sendmsg([encode_frame(Started(me))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [output]))])
    os.close(output)
    filename = job.path if job.path.endswith(".py") else f"{job.path}.py"
    _enter(job, filename)
    outcome = _execute(job, filename)
    if os.getpid() != me:  # a process the script forked, returning from main: its outcome is not the run's
        os._exit(0)
    _flush_output(libc)
    try:
        frame = encode_frame(outcome)
    except MemoryError:  # under the memory limit, a large traceback may not fit
        frame = encode_frame(_error("MemoryError", "the run's outcome did not fit in its memory limit"))
    # Everything the script wrote is in the pipe before the outcome is sent: the server, once it
    # has the outcome, reads the pipe to its end and misses nothing.
    conn.sendall(frame)


def _child(listener: socket.socket, took: int, close: list[int], parent: int, libc: ctypes.CDLL) -> NoReturn:
    """What a freshly forked child does: get ready while idle, wait for one run, run it, exit."""
    try:
        if _wait_and_run(listener, took, close, parent, libc):
            # Nothing the script started outlives its run (the child is in the group: this is its exit).
            os.killpg(0, signal.SIGKILL)
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a child must never return into the fork server's loop
        traceback.print_exc()  # into the run's log when the pipe is in place, else the fork server's
    finally:
        os._exit(EXIT_RUNNER_FAILED)


def _wait_and_run(listener: socket.socket, took: int, close: list[int], parent: int, libc: ctypes.CDLL) -> bool:
    signal.set_wakeup_fd(-1)
    for fd in close:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the fork server's stdin is its parent's pipe: not the script's
    os.close(devnull)
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # an idle child must not outlive the fork server
    if os.getppid() != parent:  # the fork server died before the line above
        return False
    os.setsid()  # its own process group: a kill of the group reaches whatever the script starts
    _reset_environment()
    output = _capture_output()
    conn, _ = listener.accept()
    os.write(took, struct.pack("=i", os.getpid()))
    os.close(took)  # out of the script's reach, like the listener
    listener.close()
    run_one(conn, output, libc)
    conn.close()
    return True


# -- the fork server ----------------------------------------------------------------------------


class _Children:
    """The fork server's book of its children: which are idle, which run, how recent ones ended,
    and who waits to hear how a running one ends."""

    KEEP_EXITS = 1024

    def __init__(self) -> None:
        self.idle: set[int] = set()
        self.running: set[int] = set()
        self.exits: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.askers: dict[int, list[socket.socket]] = {}

    def took_run(self, pid: int) -> None:
        self.idle.discard(pid)
        if pid not in self.exits:  # it may have run and been reaped already
            self.running.add(pid)

    def reap(self) -> None:
        while self.idle or self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.idle.discard(pid)  # an idle child that died is replaced like one that ran
            self.running.discard(pid)
            self.exits[pid] = status
            while len(self.exits) > self.KEEP_EXITS:
                self.exits.popitem(last=False)
            for asker in self.askers.pop(pid, []):
                _answer(asker, describe_exit(status))

    def ask(self, conn: socket.socket) -> None:
        """Answer "how did pid X end?" now, or once it has ended."""
        try:
            conn.settimeout(0.5)
            pid = int(conn.recv(32).strip() or b"0")
        except (OSError, ValueError):
            conn.close()
            return
        self.reap()
        if pid in self.exits:
            _answer(conn, describe_exit(self.exits[pid]))
        elif pid in self.running or pid in self.idle:
            self.askers.setdefault(pid, []).append(conn)
        else:
            _answer(conn, f"unknown (pid {pid} is not a recent child of the fork server)")

    def kill_all(self) -> None:
        for pid in self.idle | self.running:
            for kill in (os.killpg, os.kill):  # the group first: it holds what the script started
                try:
                    kill(pid, signal.SIGKILL)
                    break
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


def _answer(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode())
    except OSError:
        pass  # the asker gave up waiting
    finally:
        conn.close()


def _preload() -> ctypes.CDLL:
    """Import, once, what scripts import most, so that every child has it for free."""
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
    import json  # noqa: F401

    return ctypes.CDLL(None, use_errno=True)  # libc, for prctl and fflush in the children


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


def serve(socket_path: str, idle: int, ready_fd: int | None = None) -> None:
    """The fork server's main loop (the hidden `flowmill _forkserver` command): keep `idle`
    children waiting on `socket_path`, answer exit statuses on `<socket_path>.status`, write
    one byte to `ready_fd` once runs can be served, and end when stdin closes or on SIGTERM."""
    # User code yields the CPU to the server when both want it: accepting a request (and
    # committing its run) stays fast under load, and queued runs use what is left.
    os.nice(NICENESS)
    libc = _preload()
    idle = max(1, idle)  # with none, runs would wait for a child that never comes
    status_path = socket_path + ".status"
    listener = _listen(socket_path, 256)
    status = _listen(status_path, 64)
    took_r, took_w = os.pipe()  # children write their pid here when they take a run
    wake_r, wake_w = os.pipe()  # a SIGCHLD wakes select() through this
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for Flowmill, which then stops us
    # What is loaded now is shared with every child: keep the collector from touching it (and
    # so copying its pages) in each of them.
    gc.collect()
    gc.freeze()
    children = _Children()
    parent_pipe = sys.stdin.fileno()
    me = os.getpid()
    try:
        while True:
            while len(children.idle) < idle:
                close = [took_r, wake_r, wake_w, status.fileno()] + ([ready_fd] if ready_fd is not None else [])
                try:
                    pid = os.fork()
                except OSError as error:  # out of processes or memory: try again shortly
                    print(f"flowmill fork server: fork failed: {error}", file=sys.stderr, flush=True)
                    break
                if pid == 0:
                    _child(listener, took_w, close, me, libc)
                children.idle.add(pid)
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)
                ready_fd = None
            ready, _, _ = select.select([took_r, status, parent_pipe, wake_r], [], [], 1.0)
            if wake_r in ready:
                os.read(wake_r, 4096)
            if took_r in ready:
                data = os.read(took_r, 4096)  # whole pids: a pipe write this small is atomic
                for (pid,) in struct.iter_unpack("=i", data[: len(data) - len(data) % 4]):
                    children.took_run(pid)
            if parent_pipe in ready and not os.read(parent_pipe, 4096):
                return  # the Flowmill server is gone
            children.reap()
            if status in ready:
                conn, _ = status.accept()
                children.ask(conn)
    finally:
        children.kill_all()
        for path in (socket_path, status_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
