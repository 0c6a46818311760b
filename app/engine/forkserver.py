"""The server's side of the fork server: start it, hand it a run, watch the run to its end.

`ForkServer.run` is called on an executor thread and blocks until the child answers, dies,
times out or is cancelled. It waits on the child's socket and on the child's output pipe
(handed over by the child) with a short poll, so that a deadline or a cancel is seen within
`POLL_S`; a timeout or a cancel kills the child's whole process group. Output becomes log
lines here, within the job's limits, so that however much a script prints, the server holds
one chunk of it at a time. The fork server is restarted once if it has died. The other side
is `app/runtimes/python/child.py`.
"""

from __future__ import annotations

import array
import dataclasses
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import app
from app.errors import FlowmillError
from app.runtimes.python.child import (
    HEADER,
    MAX_ERROR_TEXT,
    ChildJob,
    Failed,
    Finished,
    Frame,
    Started,
    encode_frame,
)

__all__ = ["ChildJob", "ChildOutcome", "ForkServer", "ForkServerError"]

log = logging.getLogger("flowmill.forkserver")

POLL_S = 0.05  # how often a waiting run looks at its deadline and its cancel event
READY_TIMEOUT_S = 15.0
STATUS_TIMEOUT_S = 2.0
MAX_LINE = 16 * 1024
DRAIN_S = 0.5  # after a run ends: how long to keep reading output that is still being written

OnLog = Callable[[float, str, str], None]
_frame_decoder = msgspec.json.Decoder(Frame)


@dataclasses.dataclass(frozen=True)
class ChildOutcome:
    """How a run in a child ended."""

    status: str  # success, error (raised by the script), timeout, cancelled, crashed
    result: str | None = None  # the JSON text of main's return value
    error: dict[str, Any] | None = None  # name, message, traceback
    duration_s: float = 0.0
    exit_reason: str = ""  # for timeout, cancelled and crashed: what happened to the process


class ForkServerError(FlowmillError):
    """The fork server cannot be started or reached."""

    code = "fork_server_unavailable"


def command(socket_path: Path, idle: int, ready_fd: int) -> list[str]:
    """How to start the fork server: the frozen program runs itself with a hidden command."""
    args = ["_forkserver", "--socket", str(socket_path), "--idle", str(idle), "--ready-fd", str(ready_fd)]
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "app", *args]


class ForkServer:
    """The fork server process, and the runs handed to it (from any thread)."""

    def __init__(self, runtime_dir: Path, idle_children: int = 2) -> None:
        self.runtime_dir = runtime_dir
        self.idle_children = idle_children
        self.socket_path = runtime_dir / "fork.sock"
        self.status_path = runtime_dir / "fork.sock.status"
        self._process: subprocess.Popen[bytes] | None = None
        self._ready_pipe: int | None = None  # read end: one byte when it serves, EOF if it died first
        self._stopped = False  # by stop(): a run must not bring it back while the server shuts down
        self._lock = threading.Lock()

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

    def run(self, job: ChildJob, on_log: OnLog, cancel: threading.Event) -> ChildOutcome:
        """Run `job` in a fresh child and return how it ended. Log lines go to `on_log` as they
        come (on this thread); `cancel` and `job.timeout_s` kill the child within `POLL_S`."""
        started = time.monotonic()
        deadline = started + job.timeout_s if job.timeout_s is not None else None
        frame = encode_frame(job)  # before taking a child: a job that does not encode fails here
        for attempt in (1, 2):
            conn = self._connect()
            try:
                return _Run(job, conn, on_log, cancel, started, deadline, self.exit_reason).watch(frame)
            except _NotTaken:
                # The script never ran (the fork server was dying as we connected): safe to retry.
                if attempt == 2:
                    raise ForkServerError("the fork server took the run but no child started it") from None
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def exit_reason(self, pid: int, timeout_s: float = STATUS_TIMEOUT_S) -> str:
        """How child `pid` ended, as the fork server saw it: "killed by signal SIGABRT", ..."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout_s)
                conn.connect(str(self.status_path))
                conn.sendall(b"%d\n" % pid)
                return conn.recv(256).decode() or "unknown (the fork server did not say)"
        except OSError:
            return "unknown (the fork server did not say)"

    # -- the process -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._close_ready_pipe()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)  # the sockets inside run code: only this user may connect
        env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWMILL_")}
        if not getattr(sys, "frozen", False):  # `-m app` must find this very package, wherever the cwd
            root = str(Path(app.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        ready_read, ready_write = os.pipe()
        with open(self.runtime_dir / "forkserver.log", "ab") as output:
            # stdin is a pipe that only closes when this process ends: the fork server's cue to go.
            self._process = subprocess.Popen(
                command(self.socket_path, self.idle_children, ready_write),
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
        said = os.read(self._ready_pipe, 1)
        self._close_ready_pipe()
        if not said:
            raise ForkServerError(f"the fork server exited at start; see {self.runtime_dir / 'forkserver.log'}")

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


# -- one run ------------------------------------------------------------------------------------


class _NotTaken(Exception):
    """The connection closed before a child said it had the job."""


class _Run:
    """One run as the executor thread sees it: a socket for frames and a pipe for output."""

    def __init__(
        self, job: ChildJob, conn: socket.socket, on_log: OnLog, cancel: threading.Event,
        started: float, deadline: float | None, exit_reason: Callable[[int], str],
    ) -> None:
        self.job = job
        self.conn = conn
        self.cancel = cancel
        self.started = started
        self.deadline = deadline
        self.exit_reason = exit_reason
        self.pid: int | None = None
        self.output: _Output | None = None
        self.on_log = on_log
        self.buffer = bytearray()
        # A frame bigger than this is not one the child sends: refuse it rather than hold it.
        self.max_frame = job.max_result_bytes + 16 * MAX_ERROR_TEXT
        self.poller = select.poll()
        self.pending = memoryview(b"")

    def watch(self, job_frame: bytes) -> ChildOutcome:
        self.conn.setblocking(False)
        self.pending = memoryview(job_frame)  # the job, sent as the child takes it
        self.poller.register(self.conn, select.POLLIN | select.POLLOUT)
        finished = False
        try:
            while True:
                for fd, events in self.poller.poll(self._poll_ms()):
                    if self.output is not None and fd == self.output.fd:
                        if not self.output.read():
                            self.poller.unregister(fd)  # every writer has closed it
                        continue
                    if events & select.POLLOUT:
                        self._send()
                    if events & ~select.POLLOUT:
                        outcome = self._receive()
                        if outcome is not None:
                            finished = True
                            return outcome
                if self.cancel.is_set():
                    finished = True
                    return self._kill("cancelled", "killed: the run was cancelled")
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    finished = True
                    return self._kill("timeout", f"killed: the run exceeded its timeout of {self.job.timeout_s:g} s")
        finally:
            if not finished:  # on_log raised, or worse: the child must not run on unwatched
                _kill_group(self.pid)
            if self.output is not None:
                self.output.close()

    def _poll_ms(self) -> int:
        wait = POLL_S
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        return int(wait * 1000) + 1

    def _send(self) -> None:
        try:
            sent = self.conn.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the child died before reading its job: the EOF that follows says so
            sent = len(self.pending)
        self.pending = self.pending[sent:]
        if not self.pending:
            self.poller.modify(self.conn, select.POLLIN)

    def _receive(self) -> ChildOutcome | None:
        """Read from the socket; the outcome once it has come or the child is gone."""
        try:
            data, ancillary, _flags, _ = self.conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data, ancillary = b"", []
        for level, kind, fds in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                self._take_output(array.array("i", fds[: len(fds) - len(fds) % 4]))
        if not data:
            return self._crashed()
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > self.max_frame:
                _kill_group(self.pid)
                return self._ended("crashed", exit_reason=f"the child sent a message of {size} bytes, past any limit")
            if len(self.buffer) < HEADER.size + size:
                break
            body = bytes(self.buffer[HEADER.size: HEADER.size + size])
            del self.buffer[: HEADER.size + size]
            try:
                frame = _frame_decoder.decode(body)
            except msgspec.DecodeError as error:
                _kill_group(self.pid)
                return self._ended("crashed", exit_reason=f"the child sent an unreadable message: {error}")
            if isinstance(frame, Started):
                self.pid = frame.pid
            elif isinstance(frame, Finished):
                return self._ended("success", result=bytes(frame.result).decode())
            elif isinstance(frame, Failed):
                return self._ended("error", error=dict(frame.error))
        return None

    def _take_output(self, fds: array.array[int]) -> None:
        for fd in fds:
            if self.output is None:
                self.output = _Output(fd, self.job, self.on_log)
                self.poller.register(fd, select.POLLIN)
            else:
                os.close(fd)

    def _ended(self, status: str, result: str | None = None, error: dict[str, Any] | None = None,
               exit_reason: str = "") -> ChildOutcome:
        if self.output is not None:
            self.output.drain()  # the child wrote everything before its outcome: read it all
        return ChildOutcome(status, result, error, time.monotonic() - self.started, exit_reason)

    def _crashed(self) -> ChildOutcome:
        if self.pid is None:
            raise _NotTaken
        outcome = self._ended("crashed")  # the output first: it may say why (faulthandler's traceback)
        return dataclasses.replace(outcome, exit_reason=self.exit_reason(self.pid))

    def _kill(self, status: str, reason: str) -> ChildOutcome:
        _kill_group(self.pid)
        return self._ended(status, exit_reason=reason)


def _kill_group(pid: int | None) -> None:
    if pid is None:  # it has not started: closing the connection stops it before the script does
        return
    for kill in (os.killpg, os.kill):  # the group, or the child alone if it has no group yet
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


# -- output -------------------------------------------------------------------------------------


class _Output:
    """A run's output pipe, read as log lines within the job's limits: past them, lines are
    counted and dropped, and one marker line at the end says how many."""

    def __init__(self, fd: int, job: ChildJob, on_log: OnLog) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.on_log = on_log
        self.max_lines = job.max_log_lines
        self.max_bytes = job.max_log_bytes
        self.lines = self.bytes = self.dropped = 0
        self.partial = b""
        self.skipping = False  # inside a line that was cut: drop the rest of it
        self.closed = False

    def read(self) -> bool:
        """Read what is there; False at the end (every writer has closed the pipe)."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self._feed(chunk, time.time())
        return True

    def drain(self) -> None:
        """Read what is in the pipe now. A process the script left behind may keep writing:
        stop at an empty pipe, or after `DRAIN_S`."""
        until = time.monotonic() + DRAIN_S
        while time.monotonic() < until:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._feed(chunk, time.time())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)
        now = time.time()
        if self.partial and not self.skipping:
            self._line(self.partial, now)  # the last line had no newline
        if self.dropped:
            limit = f"{self.max_lines} lines" if self.lines >= self.max_lines else f"{self.max_bytes} bytes"
            self.on_log(now, "flowmill", f"[flowmill] log truncated after {self.lines} lines; "
                                         f"{self.dropped} more lines were dropped (the limit is {limit})")

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
        self.on_log(now, "stdout", text)
