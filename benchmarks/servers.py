"""The servers under test, each started as its own process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 30
CREDENTIALS = {"username": "bench", "password": "bench-password-1234"}


def free_port() -> int:
    """A port nothing listens on at the moment, on the loopback address."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _status_kb(pid: int, path: str, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/{path}").read_text().splitlines()
    except OSError:  # gone in the meantime
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field)), 0)


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of one process."""
    return _status_kb(pid, "status", "VmRSS:") / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (a forked child's) counted once across processes."""
    return _status_kb(pid, "smaps_rollup", "Pss:") / 1024


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = parents.get(todo.pop(), [])
        found += below
        todo += below
    return found


class Server:
    """A server process, started and polled until `ready_path` answers 200; `stop()` ends it
    with SIGTERM, then SIGKILL. If it does not get ready, it is stopped before raising."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        # A file, not a pipe: nobody reads the server's stderr while it runs, and a full pipe
        # would block it mid-benchmark.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        # One client for every poll (a new one costs ~20 ms); the environment's proxies ignored.
        self.client = httpx.Client(base_url=self.url, timeout=5, trust_env=False)
        self.process: subprocess.Popen[bytes] | None = None
        started = time.perf_counter()
        try:
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._stderr)
            self._wait_ready(command, ready_path, started + START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.ready_ms = (time.perf_counter() - started) * 1000

    def _wait_ready(self, command: list[str], ready_path: str, deadline: float) -> None:
        assert self.process is not None
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {self.process.returncode}: {self.stderr_tail()}")
            try:
                if self.client.get(ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{' '.join(command)} was not ready within {START_TIMEOUT_S} s: {self.stderr_tail()}")

    def stderr_tail(self, chars: int = 2000) -> str:
        """The end of what the server wrote to stderr."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()
        self._stderr.close()


def start_reference() -> Server:
    """The reference server (`benchmarks.reference`), ready to serve."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.reference", "--port", str(port)]
    return Server(command, dict(os.environ), port, "/ref/ready")


class Flowmill(Server):
    """Flowmill on a fresh data dir, its idle memory measured, and an admin's token for the
    scenarios (the first user to register is the admin)."""

    def __init__(self) -> None:
        self.home = tempfile.TemporaryDirectory(prefix="flowmill-bench-")
        # The rest of the environment is inherited, but no FLOWMILL_* setting: a database URL
        # or a disabled auth from the caller's shell would not measure a fresh default server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
        env["FLOWMILL_HOME"] = self.home.name
        port = free_port()
        try:
            super().__init__([sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port)], env, port, "/readyz")
            self.memory = self._idle_memory()
            self.client.post("/auth/register", json=CREDENTIALS).raise_for_status()
            login = self.client.post("/auth/login", json=CREDENTIALS)
            login.raise_for_status()
            self.token: str = login.json()["token"]
        except BaseException:
            self.stop()
            raise

    def _idle_memory(self) -> dict[str, Any]:
        """After a second of idleness: the server's RSS, its children's RSS summed, and the
        PSS of the whole tree (pages a forked child shares with its parent counted once)."""
        time.sleep(1)
        assert self.process is not None
        pid = self.process.pid
        below = descendants(pid)
        return {
            "idleRssMb": round(rss_mb(pid), 1),
            "childrenRssMb": round(sum(rss_mb(p) for p in below), 1),
            "children": len(below),
            "treePssMb": round(sum(pss_mb(p) for p in [pid, *below]), 1),
        }

    def auth_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers every scenario request carries."""
        return (("Authorization", f"Bearer {self.token}"), ("Content-Type", "application/json"))

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One authenticated request (to prepare a scenario); raises unless it is 2xx."""
        response = self.client.request(method, path, headers=dict(self.auth_headers()), timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def run_counts(self) -> dict[str, int]:
        """How many runs there are of each status, read from the data dir's database (a count
        over the API would page through every run), and under "started" how many runs this
        server has started (`/metrics`): retention deletes finished runs (the newest 1,000 of
        each runnable are kept by default), so the rows alone undercount what was started."""
        with contextlib.closing(sqlite3.connect(f"file:{Path(self.home.name) / 'flowmill.db'}?mode=ro", uri=True)) as db:
            counts = dict(db.execute("SELECT status, COUNT(*) FROM job GROUP BY status").fetchall())
        metrics = self.call("GET", "/metrics").text
        counts["started"] = sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
                                if line.startswith("flowmill_runs_started_total{"))
        return counts

    def wait_idle(self, timeout_s: float = 300) -> float:
        """Wait until no run is queued or running (the backlog an async scenario leaves would
        otherwise be measured with the next scenario); seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            busy = [self.call("GET", "/api/v1/jobs", params={"status": status, "limit": 1}).json()["items"]
                    for status in ("QUEUED", "RUNNING")]
            if not any(busy):
                break
            time.sleep(0.5)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the server, then remove its data dir."""
        try:
            super().stop()
        finally:
            self.home.cleanup()
