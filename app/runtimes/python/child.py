"""The fork server, and what its children do: run one script each, in their own process.

The fork server is a long-lived process that has imported what scripts usually need, then
keeps a few children forked ahead of demand, each blocked in `accept()` on a Unix socket.
The child that accepts a connection runs exactly one script and exits; the parent forks a
replacement at once, so the fork is off the critical path of the next run.

A child talks to the Flowmill server over its connection in frames (a 4-byte length, then
msgspec JSON): its pid first, then batches of log lines as the script prints them, then the
outcome. The parent answers, on a second socket, how a child ended (exit code or signal),
for the server to say why a run that sent no outcome died.

The fork server exits when its stdin closes: that is the Flowmill server going away, even
by `kill -9`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
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
import threading
import time
import traceback
import typing
from typing import Any

import msgspec

_LENGTH = struct.Struct(">I")
MAX_LINE = 16 * 1024
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "SSL_CERT_FILE", "SSL_CERT_DIR",
                 "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL")


class Job(msgspec.Struct):
    source: str
    path: str
    args: dict[str, Any]
    env: dict[str, str]
    sys_path: list[str] = []
    memory_limit_mb: int | None = None
    preprocessor_event: dict[str, Any] | None = None
    max_result_bytes: int = 10 * 1024 * 1024
    max_log_lines: int = 20_000
    max_log_bytes: int = 8 * 1024 * 1024


# -- framing ---------------------------------------------------------------------------------------


def send_frame(conn: socket.socket, message: Any, lock: threading.Lock | None = None) -> None:
    data = msgspec.json.encode(message)
    if lock is None:
        conn.sendall(_LENGTH.pack(len(data)) + data)
    else:
        with lock:
            conn.sendall(_LENGTH.pack(len(data)) + data)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(conn: socket.socket) -> bytes:
    (size,) = _LENGTH.unpack(_read_exactly(conn, 4))
    return _read_exactly(conn, size)


# -- the child: one run ----------------------------------------------------------------------------------


class _Output(threading.Thread):
    """Reads the script's stdout and stderr pipes and sends them as batches of lines,
    keeping at most `max_lines` lines / `max_bytes` bytes and counting what it drops."""

    def __init__(self, pipes: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.pipes = pipes
        self.lock = threading.Lock()
        # Set when the run arrives; nothing is written to the pipes before that.
        self.conn: socket.socket
        self.job: Job
        self.sent_lines = self.sent_bytes = self.dropped = 0
        self.partial = {fd: b"" for fd in pipes}

    def _emit(self, batch: list[tuple[float, str, str]], stream: str, raw: bytes, now: float) -> None:
        if self.sent_lines >= self.job.max_log_lines or self.sent_bytes >= self.job.max_log_bytes:
            self.dropped += 1
            return
        text = raw.decode("utf-8", "replace")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + f" [flowmill] line cut at {MAX_LINE} characters"
        batch.append((now, stream, text))
        self.sent_lines += 1
        self.sent_bytes += len(raw)

    def run(self) -> None:
        open_fds = set(self.pipes)
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [])
            batch: list[tuple[float, str, str]] = []
            now = time.time()
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.discard(fd)
                    if self.partial[fd]:
                        self._emit(batch, self.pipes[fd], self.partial[fd], now)
                        self.partial[fd] = b""
                    continue
                *lines, self.partial[fd] = (self.partial[fd] + chunk).split(b"\n")
                for line in lines:
                    self._emit(batch, self.pipes[fd], line, now)
                if len(self.partial[fd]) > MAX_LINE:  # a very long line without a newline
                    self._emit(batch, self.pipes[fd], self.partial[fd], now)
                    self.partial[fd] = b""
            if batch:
                send_frame(self.conn, {"t": "logs", "lines": batch}, self.lock)

    def finish(self) -> None:
        if self.dropped:
            note = (f"[flowmill] log truncated after {self.sent_lines} lines ({self.sent_bytes} bytes); "
                    f"{self.dropped} more lines were dropped")
            send_frame(self.conn, {"t": "logs", "lines": [(time.time(), "flowmill", note)]}, self.lock)


def _encode_result(value: Any, limit: int) -> tuple[str | None, dict[str, str] | None]:
    def fallback(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serializable")

    try:
        data = msgspec.json.encode(value, enc_hook=fallback)
    except (TypeError, OverflowError, msgspec.EncodeError) as error:
        return None, {"name": "ResultError", "message": f"the result is not JSON-serializable: {error}"}
    if len(data) > limit:
        return None, {"name": "ResultTooLarge", "message": f"the result of {len(data)} bytes exceeds the limit of {limit} bytes"}
    return data.decode(), None


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    result = function(*args, **kwargs)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def _coerce(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """JSON carries bytes as base64 and datetimes as ISO text: give main what it declares."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: pass the arguments as they are
        return args
    coerced = dict(args)
    for name, value in args.items():
        wanted = hints.get(name)
        if not isinstance(value, str):
            continue
        if wanted is bytes:
            coerced[name] = base64.b64decode(value)
        elif wanted is datetime.datetime:
            coerced[name] = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif wanted is datetime.date:
            coerced[name] = datetime.date.fromisoformat(value)
    return coerced


def _execute(job: Job) -> dict[str, Any]:
    """Run the script's main (after its preprocessor, given an event); the outcome frame."""
    filename = f"{job.path}.py"
    linecache.cache[filename] = (len(job.source), None, job.source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__flowmill_script__", "__file__": filename}
    try:
        exec(compile(job.source, filename, "exec"), namespace)
        args = job.args
        if job.preprocessor_event is not None and callable(namespace.get("preprocessor")):
            args = _call(namespace["preprocessor"], job.preprocessor_event)
            if not isinstance(args, dict):
                return {"t": "error", "error": {"name": "PreprocessorError",
                                                 "message": "preprocessor must return a dict of main's arguments"}}
        result = _call(namespace["main"], **_coerce(namespace["main"], args))
    except SystemExit as exit_:
        return {"t": "error", "error": {"name": "SystemExit", "message": f"the script called sys.exit({exit_.code!r})"}}
    except BaseException as error:  # everything the script raises is its outcome
        frames = traceback.format_exception(type(error), error, error.__traceback__)
        # Drop the frames of this runner: the user's traceback starts in their file.
        text = "".join(f for f in frames if __file__ not in f)
        return {"t": "error", "error": {"name": type(error).__name__, "message": str(error), "traceback": text}}
    encoded, problem = _encode_result(result, job.max_result_bytes)
    return {"t": "error", "error": problem} if problem else {"t": "result", "result": encoded}


def prepare_output() -> _Output:
    """Everything a run needs that does not depend on the run, done while the child idles:
    its stdout and stderr become pipes, read by a thread that sends their lines."""
    pipes = {}
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pipes[read_end] = stream
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    reader = _Output(pipes)
    reader.start()
    return reader


def run_one(conn: socket.socket, reader: _Output) -> None:
    """Take one job from `conn`, run it, and answer."""
    job = msgspec.json.decode(read_frame(conn), type=Job)
    reader.conn, reader.job = conn, job
    send_frame(conn, {"t": "pid", "pid": os.getpid()}, reader.lock)
    base = {k: v for k, v in os.environ.items() if k in BASE_ENV_KEYS}
    os.environ.clear()
    os.environ.update(base)
    os.environ.update(job.env)
    sys.path[:0] = job.sys_path
    if job.memory_limit_mb:
        limit = job.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcome = _execute(job)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.close(1)
    os.close(2)
    reader.join(2.0)  # a background process of the script may hold the pipes open
    reader.finish()
    send_frame(conn, outcome, reader.lock)


# -- the fork server -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: be killed when the fork server dies, even by SIGKILL (no orphan waits in accept)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(listener: socket.socket, took_one: int, keep: set[int], parent: int) -> None:
    try:
        for fd in keep:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above
            return
        os.setsid()  # its own process group: a kill reaches whatever the script starts
        reader = prepare_output()
        conn, _ = listener.accept()
        os.write(took_one, b"x")
        listener.close()
        run_one(conn, reader)
        conn.close()
    finally:
        os._exit(0)


def _preload() -> None:
    """Import what user code imports most, once, so that every child has it already; and
    build msgspec's decoder for jobs, which would otherwise be built again in each child."""
    for module in ("httpx", "wmill", "json", "datetime", "decimal", "uuid"):
        try:
            __import__(module)
        except ImportError:
            pass
    msgspec.json.decode(msgspec.json.encode(Job(source="", path="", args={}, env={})), type=Job)


def serve(socket_path: str, idle: int) -> None:
    """The fork server's main loop (the hidden `flowmill _forkserver` command)."""
    _preload()
    status_path = socket_path + ".status"
    for path in (socket_path, status_path):
        if os.path.exists(path):
            os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(256)
    status = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    status.bind(status_path)
    status.listen(16)
    os.chmod(socket_path, 0o600)
    os.chmod(status_path, 0o600)
    took_read, took_write = os.pipe()
    children: set[int] = set()
    exits: dict[int, int] = {}
    waiting: dict[int, list[socket.socket]] = {}
    idle_now = 0
    stdin = sys.stdin.fileno()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # What is loaded now is shared with every child: keep the garbage collector from
    # touching it (and so copying its pages) in each of them.
    gc.collect()
    gc.freeze()
    me = os.getpid()

    def reap() -> None:
        while children:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            exits[pid] = code
            if len(exits) > 10_000:
                for old in list(exits)[:5_000]:
                    del exits[old]
            for asker in waiting.pop(pid, []):
                _answer_exit(asker, code)

    try:
        while True:
            while idle_now < idle:
                pid = os.fork()
                if pid == 0:
                    _child(listener, took_write, {status.fileno(), took_read, stdin}, me)
                children.add(pid)
                idle_now += 1
            ready, _, _ = select.select([took_read, status, stdin], [], [], 0.05)
            if took_read in ready:
                idle_now -= len(os.read(took_read, 256))
            if stdin in ready and not os.read(stdin, 1):
                return  # the Flowmill server is gone
            if status in ready:
                conn, _ = status.accept()
                pid = int(conn.recv(32) or b"0")
                reap()
                if pid in exits:
                    _answer_exit(conn, exits[pid])
                elif pid in children:
                    waiting.setdefault(pid, []).append(conn)
                else:
                    conn.sendall(b"unknown")
                    conn.close()
            reap()
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for path in (socket_path, status_path):
            if os.path.exists(path):
                os.unlink(path)


def _answer_exit(conn: socket.socket, code: int) -> None:
    if os.WIFSIGNALED(code):
        reason = f"killed by signal {signal.Signals(os.WTERMSIG(code)).name}"
    else:
        reason = f"exited with code {os.WEXITSTATUS(code)}"
    try:
        conn.sendall(reason.encode())
    finally:
        conn.close()
