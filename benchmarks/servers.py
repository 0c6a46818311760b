"""The servers under test, each started as its own process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (a forked child's) counted once across processes."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Server:
    """A server process; stopped with SIGTERM (then SIGKILL) whatever happens."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = started + 30
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command} exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        else:
            self.stop()
            raise RuntimeError(f"{command} was not ready within 30 s")
        self.ready_ms = (time.perf_counter() - started) * 1000

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_reference() -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "benchmarks.reference", "--port", str(port)], dict(os.environ), port, "/ref/ready")


class Flowmill(Server):
    """Flowmill on a fresh data dir, with an admin's token for the scenarios."""

    def __init__(self) -> None:
        self.home = tempfile.TemporaryDirectory(prefix="flowmill-bench-")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
        env.update(FLOWMILL_HOME=self.home.name, FLOWMILL_PORT=str(port))
        super().__init__([sys.executable, "-m", "app", "serve"], env, port, "/readyz")
        credentials = {"username": "bench", "password": "bench-password-1234"}
        httpx.post(self.url + "/auth/register", json=credentials).raise_for_status()
        self.token = httpx.post(self.url + "/auth/login", json=credentials).json()["token"]

    def idle_memory_mb(self) -> dict[str, float]:
        """After a second of idleness: the server's RSS, and the PSS of the server with its
        fork server and idle children (their shared pages counted once)."""
        time.sleep(1)
        pid = self.process.pid
        tree = [pid, *(c for child in children(pid) for c in [child, *children(child)])]
        alive = [p for p in tree if Path(f"/proc/{p}").exists()]
        return {"serverRssMb": round(rss_mb(pid), 1), "treePssMb": round(sum(pss_mb(p) for p in alive), 1),
                "processes": len(alive)}

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        return response

    def stop(self) -> None:
        super().stop()
        self.home.cleanup()
