"""The server's side of the fork server: start it, hand it a run, watch the run to its end.

`run` is called on an executor thread and blocks until the child answers, dies, times out
or is cancelled; a timeout or a cancel kills the child's whole process group. The fork
server itself is restarted once if it has died. See `app/runtimes/python/child.py` for the
other side.
"""

from __future__ import annotations

import dataclasses
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

from app.runtimes.python.child import Job, read_frame, send_frame

POLL_S = 0.05


@dataclasses.dataclass
class ChildJob:
    source: str
    path: str  # the script's path, e.g. f/demo/hello: tracebacks name it
    args: dict[str, Any]
    env: dict[str, str]
    sys_path: list[str] = dataclasses.field(default_factory=list)
    timeout_s: float | None = None
    memory_limit_mb: int | None = None
    preprocessor_event: dict[str, Any] | None = None
    max_result_bytes: int = 10 * 1024 * 1024
    max_log_lines: int = 20_000
    max_log_bytes: int = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ChildOutcome:
    status: str  # success, error, timeout, cancelled, crashed
    result: str | None = None  # the JSON text of main's return value
    error: dict[str, Any] | None = None
    duration_s: float = 0.0
    exit_reason: str = ""


class ForkServerError(Exception):
    """The fork server cannot be started or reached."""


def command(socket_path: Path, idle: int) -> list[str]:
    """How to start the fork server: the frozen program runs itself with a hidden command."""
    args = ["_forkserver", "--socket", str(socket_path), "--idle", str(idle)]
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "app", *args]


class ForkServer:
    def __init__(self, runtime_dir: Path, idle_children: int = 2) -> None:
        self.runtime_dir = runtime_dir
        self.idle_children = idle_children
        self.socket_path = runtime_dir / "fork.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the fork server without waiting for it: the first run waits if it must,
        so that the HTTP server is ready without paying for the fork server's imports."""
        with self._lock:
            self._spawn()

    def _start(self, timeout_s: float) -> None:
        self._spawn()
        self._wait_ready(timeout_s)

    def _spawn(self) -> None:
        self._ready = False
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        log = open(self.runtime_dir / "forkserver.log", "ab")
        # stdin is a pipe that only closes when this process ends: the fork server's cue to go.
        self.process = subprocess.Popen(
            command(self.socket_path, self.idle_children), stdin=subprocess.PIPE, stdout=log, stderr=log,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")},
        )
        log.close()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ForkServerError(f"the fork server exited at start; see {self.runtime_dir / 'forkserver.log'}")
            if self.socket_path.exists() and Path(f"{self.socket_path}.status").exists():
                self._ready = True
                return
            time.sleep(0.005)
        raise ForkServerError(f"the fork server did not start within {timeout_s:g} s")

    def stop(self) -> None:
        """Stop the fork server; it kills its children as it goes."""
        with self._lock:
            if self.process is None:
                return
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdin:
                self.process.stdin.close()
            self.process = None

    def _connect(self) -> socket.socket:
        for attempt in range(2):
            if not self._ready or self.process is None or self.process.poll() is not None:
                with self._lock:
                    if self.process is None or self.process.poll() is not None:
                        self._start(15)
                    elif not self._ready:
                        self._wait_ready(15)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(self.socket_path))
                return conn
            except OSError:
                conn.close()
                if attempt:
                    raise
                with self._lock:  # the socket is gone: the fork server died under us
                    if self.process is not None:
                        self.process.kill()
                        self.process.wait()
                    self.process = None
        raise ForkServerError("cannot reach the fork server")

    def exit_reason(self, pid: int, timeout_s: float = 2.0) -> str:
        """How a child ended, as the fork server saw it."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout_s)
                conn.connect(f"{self.socket_path}.status")
                conn.sendall(str(pid).encode())
                return conn.recv(200).decode() or "unknown"
        except OSError:
            return "unknown (the fork server did not say)"

    def run(self, job: ChildJob, on_log: Callable[[float, str, str], None], cancel: threading.Event) -> ChildOutcome:
        """Run `job` in a fresh child; log lines go to `on_log` as they come."""
        started = time.monotonic()
        deadline = started + job.timeout_s if job.timeout_s else None
        conn = self._connect()
        fields = {name: getattr(job, name) for name in Job.__struct_fields__}
        pid: int | None = None
        try:
            send_frame(conn, Job(**fields))
            while True:
                ready, _, _ = select.select([conn], [], [], POLL_S)
                if ready:
                    try:
                        frame = msgspec.json.decode(read_frame(conn))
                    except (EOFError, ConnectionError):
                        reason = self.exit_reason(pid) if pid else "it never started"
                        return ChildOutcome("crashed", duration_s=time.monotonic() - started, exit_reason=reason)
                    kind = frame["t"]
                    if kind == "pid":
                        pid = frame["pid"]
                    elif kind == "logs":
                        for ts, stream, line in frame["lines"]:
                            on_log(ts, stream, line)
                    elif kind == "result":
                        return ChildOutcome("success", result=frame["result"], duration_s=time.monotonic() - started)
                    elif kind == "error":
                        return ChildOutcome("error", error=frame["error"], duration_s=time.monotonic() - started)
                    continue
                if cancel.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    _kill(pid)
                    status = "cancelled" if cancel.is_set() else "timeout"
                    return ChildOutcome(status, duration_s=time.monotonic() - started, exit_reason="killed")
        finally:
            conn.close()


def _kill(pid: int | None) -> None:
    if pid is None:
        return
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue
