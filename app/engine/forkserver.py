"""The server's side of the fork server: start it, hand it runs, hear how they end.

The fork server runs each job in a fresh child and watches it (output, timeout, cancel, how
the process ended; see `app/runtimes/python/supervisor.py`, `protocol.py`). On the event loop, `submit` sends a
run over one long-lived connection that carries every run of this process, and the answer
comes back as log lines and one `Ended` message: no thread waits on a child. `run` is the
blocking form (one connection per call), for code that runs outside the event loop. The fork
server is restarted if it has died.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

import app
from app.errors import FlowmillError
from app.runtimes.python.protocol import (
    Cancel,
    ChildJob,
    Ended,
    FrameReader,
    Output,
    Proceed,
    ServerFrame,
    Step,
    encode_frame,
    run_frame,
)

__all__ = ["ChildJob", "ChildOutcome", "ForkServer", "ForkServerError", "RunHandle", "WallSettings"]

log = logging.getLogger("flowmill.forkserver")

POLL_S = 0.05  # how often a blocking run looks at its cancel event
READY_TIMEOUT_S = 15.0
MAX_MESSAGE = 64 * 1024 * 1024

OnLog = Callable[[float, str, str], None]
# (seq, name, JSON text, replace) -> whether the run is to pause at this step boundary
OnStep = Callable[[int, str, str, bool], Awaitable[bool]]
_frames = msgspec.json.Decoder(ServerFrame)


@dataclasses.dataclass(frozen=True)
class ChildOutcome:
    """How a run in a child ended."""

    status: str  # success, error (raised by the script), timeout, cancelled, crashed
    result: str | None = None  # the JSON text of main's return value
    error: dict[str, Any] | None = None  # name, message, traceback
    duration_s: float = 0.0
    exit_reason: str = ""  # for timeout, cancelled and crashed: what happened to the process
    args: str | None = None  # the JSON text of main's arguments, when a preprocessor made them
    wait: dict[str, Any] | None = None  # suspended: what the run waits for


def _deliver(message: Output | Ended, on_log: OnLog) -> ChildOutcome | None:
    """Pass an `Output`'s lines to `on_log`; the outcome an `Ended` says."""
    if isinstance(message, Output):
        for ts, stream, text in message.lines:
            on_log(ts, stream, text)
        return None
    result = bytes(message.result).decode() if message.status == "success" else None
    given = bytes(message.args)
    args = given.decode() if given != b"null" else None
    return ChildOutcome(message.status, result, message.error, message.duration_s, message.exit_reason, args,
                        message.wait)


class ForkServerError(FlowmillError):
    """The fork server cannot be started or reached."""

    code = "fork_server_unavailable"


@dataclasses.dataclass(frozen=True)
class WallSettings:
    """How runs are walled off (see app/runtimes/python/wall.py)."""

    denied: tuple[Path, ...] = ()  # folders no run may read or write: the data dir
    enabled: bool = True  # off only to measure what the wall costs: runs can then read the keys
    max_file_bytes: int | None = 1024 * 1024 * 1024
    max_processes: int | None = 512


def command(socket_path: Path, idle: int, ready_fd: int, lean: bool = False, wall: WallSettings = WallSettings()) -> list[str]:
    """How to start the fork server: the frozen program runs itself with a hidden command."""
    args = ["_forkserver", "--socket", str(socket_path), "--idle", str(idle), "--ready-fd", str(ready_fd),
            "--client-pid", str(os.getpid())]
    if lean:
        args.append("--lean")
    if not wall.enabled:
        args.append("--no-wall")
    for folder in wall.denied:
        args += ["--deny", str(folder)]
    if wall.max_file_bytes:
        args += ["--max-file-bytes", str(wall.max_file_bytes)]
    if wall.max_processes:
        args += ["--max-processes", str(wall.max_processes)]
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    # -P: the cwd is not put on sys.path, whose every entry runs may read.
    return [sys.executable, "-P", "-m", "app", *args]


class RunHandle:
    """A run sent to the fork server: await `outcome`; `cancel()` kills it. Each step the child
    checkpoints is handed to `on_step` (seq, name, JSON text, replace), and the child goes on
    once that has returned: a step is stored before the run passes it. What `on_step` returns
    says whether the child is to end its turn paused there instead."""

    def __init__(self, channel: _Channel, run_id: int, on_log: OnLog, on_step: OnStep | None = None) -> None:
        self.channel = channel
        self.id = run_id
        self.on_log = on_log
        self.on_step = on_step
        self.outcome: asyncio.Future[ChildOutcome] = asyncio.get_running_loop().create_future()
        self._steps: asyncio.Task[None] | None = None  # the last step's store: the next waits for it
        self.step_error: str | None = None  # why a step could not be stored: the run was stopped

    def step(self, message: Step) -> None:
        self._steps = asyncio.get_running_loop().create_task(self._store(self._steps, message))

    async def _store(self, previous: asyncio.Task[None] | None, message: Step) -> None:
        if previous is not None:
            await previous
        pause = False
        if self.on_step is not None:
            try:
                pause = await self.on_step(message.seq, message.name, bytes(message.result).decode(), message.replace)
            except Exception as error:  # not stored: the child must not go on as if it were
                log.exception("storing step %d of a run failed; the run is stopped", message.seq)
                self.step_error = f"step {message.name!r} could not be stored: {error}"
                self.cancel()
                return
        if not self.outcome.done() and not self.channel.closed:
            self.channel.send(encode_frame(Proceed(self.id, message.seq, bool(pause))))

    def cancel(self) -> None:
        if not self.outcome.done() and not self.channel.closed:
            self.channel.send(encode_frame(Cancel(self.id)))


class _Channel(asyncio.Protocol):
    """This process's connection to the fork server, on the event loop."""

    def __init__(self, server: ForkServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.frames = FrameReader(MAX_MESSAGE)
        self.runs: dict[int, RunHandle] = {}
        self.ids = itertools.count(1)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        try:
            messages = [_frames.decode(body) for body in self.frames.feed(data)]
        except (ValueError, msgspec.DecodeError) as error:
            log.error("unreadable message from the fork server: %s", error)
            assert self.transport is not None
            self.transport.close()
            return
        for message in messages:
            handle = self.runs.get(message.id)
            if handle is None:
                continue
            if isinstance(message, Step):
                handle.step(message)
                continue
            outcome = _deliver(message, handle.on_log)
            if outcome is not None:
                del self.runs[message.id]
                if not handle.outcome.done():
                    handle.outcome.set_result(outcome)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f"the fork server stopped ({self.server.describe_exit()})"
        for handle in self.runs.values():
            if not handle.outcome.done():
                handle.outcome.set_result(ChildOutcome("crashed", exit_reason=reason))
        self.runs.clear()


class ForkServer:
    """The fork server process, and the runs handed to it (`submit` on the event loop, `run`
    from any thread)."""

    def __init__(self, runtime_dir: Path, idle_children: int = 2, lean: bool = False, wall: WallSettings | None = None) -> None:
        self.runtime_dir = runtime_dir
        self.idle_children = idle_children
        self.lean = lean  # preloads only the light modules (see preload.LIGHT_MODULES)
        # Without settings, the folder that holds the runtime dir is the data dir to wall off.
        self.wall = wall or WallSettings(denied=(runtime_dir.parent,))
        self.walls = ""  # what the fork server said of the walls around runs, once it serves
        self.socket_path = runtime_dir / ("fork-lean.sock" if lean else "fork.sock")
        self._process: subprocess.Popen[bytes] | None = None
        self._ready_pipe: int | None = None  # read end: one byte when it serves, EOF if it died first
        self._stopped = False  # by stop(): a run must not bring it back while the server shuts down
        self._lock = threading.Lock()
        self._channel: _Channel | None = None
        self._channel_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The fork server's pid, while it runs."""
        return self._process.pid if self._process else None

    def start(self, wait: bool = False) -> None:
        """Start the fork server. Without `wait`, return at once: the first run waits if it
        must, so that the HTTP server is ready without paying for the fork server's imports."""
        with self._lock:
            self._stopped = False
            if self._process is None or self._process.poll() is not None:
                self._spawn()
            if wait:
                self._wait_ready(READY_TIMEOUT_S)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the fork server serves runs (starting it if need be)."""
        with self._lock:
            self._ensure_running(timeout_s)

    def stop(self) -> None:
        """Stop the fork server; it kills its children, and what they started, as it goes."""
        with self._lock:
            self._stopped = True
            process, self._process = self._process, None
            self._close_ready_pipe()
            if process is None:
                return
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdin:
                process.stdin.close()

    async def submit(self, job: ChildJob, on_log: OnLog, on_step: OnStep | None = None) -> RunHandle:
        """Send `job` to a fresh child (on the event loop); log lines go to `on_log` as they
        come, steps to `on_step` (see RunHandle)."""
        channel = self._channel
        if channel is None or channel.closed:
            channel = await self._connect_channel()
        handle = RunHandle(channel, next(channel.ids), on_log, on_step)
        channel.runs[handle.id] = handle
        channel.send(run_frame(handle.id, job))
        return handle

    async def _connect_channel(self) -> _Channel:
        async with self._channel_lock:
            if self._channel is None or self._channel.closed:
                await asyncio.to_thread(self.wait_ready)
                loop = asyncio.get_running_loop()
                try:
                    _, channel = await loop.create_unix_connection(lambda: _Channel(self), str(self.socket_path))
                except OSError as error:
                    raise ForkServerError(f"cannot reach the fork server: {error}") from error
                self._channel = channel
            return self._channel

    def run(self, job: ChildJob, on_log: OnLog, cancel: threading.Event) -> ChildOutcome:
        """Run `job` in a fresh child and return how it ended (blocking, on a connection of its
        own). Log lines go to `on_log` as they come; `cancel` kills the child within `POLL_S`."""
        frame = run_frame(1, job)  # before connecting: a job that does not encode fails here
        conn = self._connect()
        try:
            conn.sendall(frame)
            conn.settimeout(POLL_S)
            frames = FrameReader(MAX_MESSAGE)
            cancelled = False
            while True:
                if cancel.is_set() and not cancelled:
                    conn.sendall(encode_frame(Cancel(1)))
                    cancelled = True
                try:
                    data = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    return ChildOutcome("crashed", exit_reason=f"the fork server stopped ({self.describe_exit()})")
                for body in frames.feed(data):
                    message = _frames.decode(body)
                    if isinstance(message, Step):  # nothing stores a blocking run's steps: it goes on
                        conn.sendall(encode_frame(Proceed(1, message.seq)))
                        continue
                    outcome = _deliver(message, on_log)
                    if outcome is not None:
                        return outcome
        finally:
            conn.close()

    def describe_exit(self) -> str:
        process = self._process
        if process is None:
            return "stopped"
        code = process.poll()
        return "still running" if code is None else _describe_returncode(code)

    # -- the process -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._close_ready_pipe()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)  # the sockets inside run code: only this user may connect
        # Nothing of Flowmill's settings, nor PostgreSQL's (PGPASSWORD...), reaches the fork server.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("FLOWMILL_", "PG"))}
        if not getattr(sys, "frozen", False):  # `-m app` must find this very package, wherever the cwd
            root = str(Path(app.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        ready_read, ready_write = os.pipe()
        with open(self.runtime_dir / ("forkserver-lean.log" if self.lean else "forkserver.log"), "ab") as output:
            # stdin is a pipe that only closes when this process ends: the fork server's cue to go.
            self._process = subprocess.Popen(
                command(self.socket_path, self.idle_children, ready_write, self.lean, self.wall),
                stdin=subprocess.PIPE, stdout=output, stderr=output, env=env, pass_fds=(ready_write,),
            )
        os.close(ready_write)
        self._ready_pipe = ready_read

    def _wait_ready(self, timeout_s: float) -> None:
        if self._ready_pipe is None:
            return
        poller = select.poll()  # not select(): the server may hold more than FD_SETSIZE descriptors
        poller.register(self._ready_pipe, select.POLLIN)
        if not poller.poll(timeout_s * 1000):
            raise ForkServerError(f"the fork server did not start within {timeout_s:g} s")
        said = os.read(self._ready_pipe, 4096)  # one byte, then what holds around runs
        self._close_ready_pipe()
        if not said:
            raise ForkServerError(f"the fork server exited at start; see {self.runtime_dir / 'forkserver.log'}")
        walls = said[1:].decode(errors="replace")
        if walls != self.walls:
            self.walls = walls
            log.log(logging.INFO if self.wall.enabled else logging.WARNING, "%s fork server: %s",
                    "lean" if self.lean else "full", walls)

    def _ensure_running(self, timeout_s: float) -> None:
        if self._stopped:
            raise ForkServerError("the fork server has been stopped")
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                log.warning("the fork server died (%s); restarting it", _describe_returncode(self._process.returncode))
                if self._process.stdin:
                    self._process.stdin.close()
            self._spawn()
        self._wait_ready(timeout_s)

    def _close_ready_pipe(self) -> None:
        if self._ready_pipe is not None:
            os.close(self._ready_pipe)
            self._ready_pipe = None

    def _connect(self) -> socket.socket:
        """A connection to an idle child; restarts a dead fork server once."""
        for attempt in (1, 2):
            with self._lock:
                self._ensure_running(READY_TIMEOUT_S)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(self.socket_path))
                return conn
            except OSError as error:
                conn.close()
                if attempt == 2:
                    raise ForkServerError(f"cannot reach the fork server: {error}") from error
                with self._lock:  # the socket is gone or refuses: the fork server is dead or dying
                    if self._process is not None and self._process.poll() is None:
                        self._process.kill()
                        self._process.wait()
        raise AssertionError("unreachable")


def _describe_returncode(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"
