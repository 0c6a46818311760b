"""A workflow's progress survives the process: after `kill -9` in the middle of a 100-step
workflow it completes, and every step that had completed before the kill ran exactly once; a
workflow sleeping holds no process and no thread, and wakes on time across a restart."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

HUNDRED = """
import time
import urllib.request
from flowmill import workflow, step


def call(port: int, i: int) -> int:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/step/{i}", timeout=5).read()  # a side effect outside the run
    time.sleep(0.02)
    return i


@workflow
def main(port: int, n: int = 100):
    return sum(step(f"s{i}", call, port, i) for i in range(n))
"""

SLEEPER = """
from flowmill import workflow, step, sleep


@workflow
def main(seconds: float = 4):
    before = step("before", lambda: "before")
    sleep(seconds)
    return step("after", lambda: before + " and after")
"""


@pytest.fixture
def calls() -> Iterator[tuple[int, Counter[str]]]:
    """A loopback HTTP server that counts the calls to each path (it outlives the server's kill)."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            with lock:
                counts[self.path] += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield http.server_address[1], counts
    http.shutdown()


def _save(client: httpx.Client, path: str, content: str) -> None:
    answer = client.post("/api/v1/scripts", json={"path": path, "content": content})
    assert answer.status_code in (200, 201), answer.text


def _job(server: FlowmillServer, job_id: str) -> dict[str, Any]:
    with server.client(server.admin_token()) as client:
        return client.get(f"/api/v1/jobs/{job_id}").json()


def test_kill_9_in_the_middle_of_100_steps_each_completed_step_ran_once(
        fresh_server: FlowmillServer, calls: tuple[int, Counter[str]]) -> None:
    port, counts = calls
    server = fresh_server
    server.start()
    with server.client(server.admin_token()) as client:
        _save(client, "f/durable/hundred", HUNDRED)
        job_id = client.post("/api/v1/jobs/run/p/f/durable/hundred", json={"port": port}).json()["jobId"]
    wait_for(lambda: server.count("job_step", "job_id = $1", job_id) >= 40, 60, "40 steps")
    server.kill9()
    stored = {name for (name,) in server.query("SELECT name FROM job_step WHERE job_id = $1", job_id)}
    assert 40 <= len(stored) < 100, len(stored)
    server.start()
    done = wait_for(lambda: (job := _job(server, job_id))["status"] in ("SUCCESS", "FAILED") and job, 120,
                    "the workflow to complete after the restart")
    assert done["status"] == "SUCCESS", done["error"]
    assert done["result"] == sum(range(100))
    for i in range(100):
        ran = counts[f"/step/{i}"]
        if f"s{i}" in stored:
            assert ran == 1, f"step s{i} completed before the kill but ran {ran} times"
        else:
            assert ran >= 1, f"step s{i} never ran"
    # The step in flight when the process died may have run twice; none other did.
    assert sum(counts.values()) <= 101


def _descendants(pid: int) -> int:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = 0, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += len(children)
        frontier = children
    return found


def test_a_sleeping_workflow_holds_nothing_and_wakes_on_time_across_a_restart(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    assert server.process is not None
    with server.client(server.admin_token()) as client:
        _save(client, "f/durable/sleeper", SLEEPER)
        warm = client.post("/api/v1/jobs/run/p/f/durable/sleeper", json={"seconds": 0}).json()["jobId"]
        wait_for(lambda: _job(server, warm)["status"] == "SUCCESS", 30, "a warm-up run")
        time.sleep(1)  # the fork servers' idle children topped up again
        pid = server.process.pid
        processes, threads = _descendants(pid), len(os.listdir(f"/proc/{pid}/task"))
        job_id = client.post("/api/v1/jobs/run/p/f/durable/sleeper", json={"seconds": 4}).json()["jobId"]
    waiting = wait_for(lambda: (job := _job(server, job_id))["status"] == "WAITING" and job, 30, "the sleep")
    assert waiting["kind"] == "workflow" and waiting["wakeAt"] == waiting["waitingFor"]["untilMs"]
    time.sleep(0.5)
    assert _descendants(pid) <= processes, "a sleeping workflow holds a process"
    assert len(os.listdir(f"/proc/{pid}/task")) <= threads, "a sleeping workflow holds a thread"
    assert server.stop() == 0  # a restart in the middle of the sleep
    server.start()
    done = wait_for(lambda: (job := _job(server, job_id))["status"] in ("SUCCESS", "FAILED") and job, 30, "the wake")
    assert done["status"] == "SUCCESS" and done["result"] == "before and after"
    assert waiting["wakeAt"] <= done["finishedAt"] < waiting["wakeAt"] + 1500  # on time, not by a slow poll
