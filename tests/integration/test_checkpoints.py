"""Checkpoints over the child protocol: a step is stored before the child is told to go on, and
a run that runs again (a retry, a recovery after kill -9) replays its stored steps."""

from __future__ import annotations

import random
import socket
import threading

from tests.support import FlowmillServer, wait_for

STEPS = """
import socket
import flowmill

def main(port: int, count: int = 1000):
    told = socket.create_connection(("127.0.0.1", port))
    for i in range(count):
        flowmill.step(f"s{i}", lambda: {"i": i})
        told.sendall(f"{i}\\n".encode())  # step i passed: the server said it is stored
    return count
"""

RETRY = """
import time
import flowmill

def compute():
    print("computing a")
    return 41

def main():
    a = flowmill.step("a", compute)
    first = flowmill.step("first attempt at", time.time)
    if time.time() - first < 0.5:
        raise RuntimeError("the first attempt fails after its steps")
    return a + 1
"""


def _listen() -> tuple[socket.socket, list[int]]:
    """A listener on loopback that collects the step numbers a run says it passed."""
    listener = socket.create_server(("127.0.0.1", 0))
    passed: list[int] = []

    def collect() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _read(c, passed), daemon=True).start()

    threading.Thread(target=collect, daemon=True).start()
    return listener, passed


def _read(conn: socket.socket, passed: list[int]) -> None:
    buffer = b""
    while chunk := conn.recv(4096):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        passed.extend(int(line) for line in lines)


def test_every_step_a_child_was_told_to_pass_is_stored_across_kill_9(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    listener, passed = _listen()
    port = listener.getsockname()[1]
    token = server.admin_token()
    with server.client(token) as client:
        client.post("/api/v1/scripts", json={
            "path": "f/test/steps", "content": STEPS, "retry": {"attempts": 1, "backoffS": 0.1},
        }).raise_for_status()
        job_id = client.post("/api/v1/jobs/run/p/f/test/steps", json={"port": port}).json()["jobId"]
    # kill -9 after a random number of steps (a random moment would miss a run that is quick)
    at = random.randint(20, 500)
    wait_for(lambda: len(passed) > at, 30, f"the run passing {at} steps")
    server.kill9()
    told = max(passed)
    stored = {name for (name,) in server.query("SELECT name FROM job_step WHERE job_id = $1", job_id)}
    missing = [i for i in range(told + 1) if f"s{i}" not in stored]
    assert not missing, f"steps the child was told to pass but not stored: {missing[:10]}"
    print(f"\n[{server.backend}] killed at step {told}; {len(stored)} steps stored")
    # Restarted, the run is recovered and retried: its stored steps replay, the rest run.
    passed.clear()
    server.start()
    with server.client(token) as client:
        def final() -> dict | None:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in ("SUCCESS", "FAILED") else None

        job = wait_for(final, 60, "the recovered run to finish")
        assert job["status"] == "SUCCESS" and job["result"] == 1000 and job["attempt"] == 2, job
    assert server.count("job_step", "job_id = $1", job_id) == 1000
    assert sorted(passed) == list(range(1000))
    listener.close()


def test_a_retry_replays_its_stored_steps(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        client.post("/api/v1/scripts", json={
            "path": "f/test/replay", "content": RETRY, "retry": {"attempts": 1, "backoffS": 1},
        }).raise_for_status()
        job_id = client.post("/api/v1/jobs/run/p/f/test/replay", json={}).json()["jobId"]

        def final() -> dict | None:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in ("SUCCESS", "FAILED") else None

        job = wait_for(final, 30, "the retried run to finish")
        assert job["status"] == "SUCCESS" and job["result"] == 42 and job["attempt"] == 2, job
        lines = [line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json()]
        assert lines.count("computing a") == 1, lines  # not run again: replayed from its checkpoint
