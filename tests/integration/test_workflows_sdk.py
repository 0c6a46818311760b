"""Flowmill's workflow SDK on a real server: tasks and parallel tasks as child runs, per-step
retry policies, events and their timeouts, pause at a step boundary, and the clear errors of a
replay that diverges and of a step too large to store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

TASKS = """
from flowmill import workflow, task, parallel, TaskError


@task(timeout=30)
def square(n: int) -> int:
    return n * n


@task
async def shout(word: str) -> str:
    if word == "boom":
        raise ValueError("no boom")
    return word.upper()


@workflow(name="sdk.tasks")
async def main(n: int = 5):
    first = await shout("hi")
    squares = parallel(list(range(n)), square, concurrency=2)
    try:
        await shout("boom")
        failed = None
    except TaskError as error:
        failed = {"key": error.step_key, "child": error.child_job_id, "name": error.error.get("name"), "message": str(error)}
    return {"first": first, "squares": squares, "failed": failed}
"""

RETRIES = """
import urllib.request
from flowmill import workflow, step, Retry


def call(port: int, path: str, fail_until: int) -> int:
    count = int(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read())
    if count < fail_until:
        raise ConnectionError(f"attempt {count} failed")
    return count


def refuse(port: int) -> int:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/refused", timeout=5).read()
    raise ValueError("never retried")


@workflow
def main(port: int):
    quick = step("quick", call, port, "/quick", 3, retry=Retry(limit=3, delay=0.05, backoff="constant"))
    slow = step("slow", call, port, "/slow", 2, retry=Retry(limit=2, delay=1, backoff="linear"))
    try:
        step("refuse", refuse, port, retry=Retry(limit=5, delay=0.05, non_retryable=(ValueError,)))
    except ValueError as error:
        refused = str(error)
    return {"quick": quick, "slow": slow, "refused": refused}
"""

DIVERGING = """
import urllib.request
from flowmill import workflow, step, sleep


@workflow
def main(port: int):
    turn = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/turn", timeout=5).read())  # outside a step: wrong
    names = ["a", "b"] if turn == 1 else ["b", "a"]
    for name in names:
        step(name, lambda: name)
    sleep(1)
    return names
"""

LARGE = """
from flowmill import workflow, step


@workflow
def main():
    step("small", lambda: 1)
    step("huge", lambda: "x" * (2 * 1024 * 1024))
"""

EVENTS = """
from flowmill import workflow, step, sleep, wait_for_event, EventTimeout


@workflow
def main():
    sleep(2)  # an event sent meanwhile is kept for the wait below
    early = wait_for_event("paid")
    try:
        wait_for_event("shipped", timeout=1)
        shipped = "shipped"
    except EventTimeout as error:
        shipped = f"timed out: {error}"
    after = step("after", lambda: "went on")
    sleep(2)  # an event sent late comes meanwhile: what the wait saw does not change
    return {"early": early["payload"], "shipped": shipped, "after": after}
"""

PAUSING = """
import time
from flowmill import workflow, step


def work(i: int) -> int:
    print(f"step {i} runs")
    time.sleep(0.1)
    return i


@workflow
def main(n: int = 30):
    return sum(step(f"s{i}", work, i) for i in range(n))
"""


def _save(client: httpx.Client, path: str, content: str) -> dict[str, Any]:
    answer = client.post("/api/v1/scripts", json={"path": path, "content": content})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def _start(client: httpx.Client, path: str, args: dict[str, Any]) -> str:
    answer = client.post(f"/api/v1/jobs/run/p/{path}", json=args)
    assert answer.status_code == 201, answer.text
    return answer.json()["jobId"]


def _until(client: httpx.Client, job_id: str, *statuses: str, timeout_s: float = 60) -> dict:
    def reached() -> dict | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout_s, f"job {job_id} to be {' or '.join(statuses)}")


def _steps(server: FlowmillServer, job_id: str) -> dict[str, Any]:
    rows = server.query("SELECT name, result FROM job_step WHERE job_id = $1 ORDER BY seq", job_id)
    return {name: json.loads(result) for name, result in rows}


@pytest.fixture
def counter() -> Iterator[tuple[int, dict[str, int]]]:
    """A loopback HTTP server that counts the calls to each path and answers the count."""
    counts: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            with lock:
                counts[self.path] = counts.get(self.path, 0) + 1
                body = str(counts[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield http.server_address[1], counts
    http.shutdown()


def test_tasks_run_as_child_runs_and_parallel_ones_in_bounded_batches(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        assert _save(client, "f/sdk/tasks", TASKS)["workflow"] == "sdk.tasks"
        job_id = _start(client, "f/sdk/tasks", {"n": 5})
        done = _until(client, job_id, "SUCCESS", "FAILED")
        assert done["status"] == "SUCCESS", done["error"]
        result = done["result"]
        assert result["first"] == "HI" and result["squares"] == [0, 1, 4, 9, 16]
        failed = result["failed"]
        assert failed["key"] == "shout_2" and failed["name"] == "ValueError" and failed["message"] == "no boom"
        assert client.get(f"/api/v1/jobs/{failed['child']}").json()["status"] == "FAILED"
        children = server.query("SELECT kind, created_at, timeout_ms, args FROM job WHERE parent_job = $1", job_id)
        assert len(children) == 7 and {kind for kind, *_ in children} == {"task"}
        squares = sorted((created, json.loads(args)["n"], timeout) for _, created, timeout, args in children
                         if "n" in json.loads(args))
        # At most two at a time: dispatched in three commits (a batch's children share their time).
        batches: dict[int, list[int]] = {}
        for created, n, timeout in squares:
            batches.setdefault(created, []).append(n)
            assert timeout == 30000
        assert sorted(sorted(batch) for batch in batches.values()) == [[0, 1], [2, 3], [4]]
        steps = _steps(server, job_id)
        assert [name for name in steps if ":" not in name] == [
            "shout", "square", "square_2", "square_3", "square_4", "square_5", "shout_2"]


def test_a_steps_retry_policy_retries_waits_durably_and_spares_what_it_must(
        server: FlowmillServer, counter: tuple[int, dict[str, int]]) -> None:
    port, counts = counter
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/retries", RETRIES)
        job_id = _start(client, "f/sdk/retries", {"port": port})
        waiting = _until(client, job_id, "WAITING", "SUCCESS", "FAILED")
        assert waiting["status"] == "WAITING", waiting  # the one-second retry waits without a process
        record = _steps(server, job_id)["retry:slow"]
        assert record["attempt"] == 1 and record["nextAt"] == waiting["wakeAt"]
        done = _until(client, job_id, "SUCCESS", "FAILED")
        assert done["status"] == "SUCCESS", done["error"]
        assert done["result"] == {"quick": 3, "slow": 2, "refused": "never retried"}
        assert counts == {"/quick": 3, "/slow": 2, "/refused": 1}
        steps = _steps(server, job_id)
        assert steps["retry:quick"]["attempt"] == 2 and steps["quick"] == 3
        assert done["finishedAt"] >= record["nextAt"]


def test_a_replay_that_diverges_fails_naming_the_step(server: FlowmillServer, counter: tuple[int, dict[str, int]]) -> None:
    port, _ = counter
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/diverging", DIVERGING)
        job_id = _start(client, "f/sdk/diverging", {"port": port})
        failed = _until(client, job_id, "FAILED", "SUCCESS")
        error = failed["error"]
        assert failed["status"] == "FAILED" and error["name"] == "NonDeterminismError"
        assert "'b'" in error["message"] and "'a'" in error["message"], error["message"]


def test_a_step_result_over_the_limit_is_refused_naming_the_step(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/large", LARGE)
        job_id = _start(client, "f/sdk/large", {})
        failed = _until(client, job_id, "FAILED", "SUCCESS")
        assert failed["status"] == "FAILED" and failed["error"]["name"] == "StepError"
        assert "'huge'" in failed["error"]["message"] and "1048576 bytes" in failed["error"]["message"]
        assert list(_steps(server, job_id)) == ["small"]


def test_an_event_sent_before_the_wait_is_delivered_and_a_timeout_is_caught(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/events", EVENTS)
        job_id = _start(client, "f/sdk/events", {})
        _until(client, job_id, "WAITING")
        sent = client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "paid", "payload": {"amount": 5}})
        assert sent.status_code == 201, sent.text
        wait_for(lambda: "after" in _steps(server, job_id), 30, "the step after the timeout")
        late = client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "shipped", "payload": 1})
        assert late.status_code == 201 and late.json()["number"] == 2, late.text  # the timed-out wait took number 1
        done = _until(client, job_id, "SUCCESS", "FAILED")
        assert done["status"] == "SUCCESS", done["error"]
        assert done["result"] == {"early": {"amount": 5}, "after": "went on",
                                  "shipped": "timed out: no event of type 'shipped' came within 1 s"}
        steps = _steps(server, job_id)
        assert steps["event:shipped:1"] == {"type": "shipped", "timedOut": True}
        assert steps["event:shipped:2"]["payload"] == 1


def test_pause_stops_a_running_workflow_at_its_next_step_and_resume_goes_on(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/pausing", PAUSING)
        job_id = _start(client, "f/sdk/pausing", {"n": 30})
        wait_for(lambda: server.count("job_step", "job_id = $1", job_id) >= 3, 30, "three steps")
        asked = client.post(f"/api/v1/jobs/{job_id}/pause")
        assert asked.status_code == 200, asked.text
        at = server.count("job_step", "job_id = $1", job_id)
        paused = _until(client, job_id, "PAUSED", "SUCCESS")
        assert paused["status"] == "PAUSED"
        stored = server.count("job_step", "job_id = $1", job_id)
        assert at <= stored <= at + 1 < 30  # stopped at the next step boundary
        assert server.query("SELECT pause_requested FROM job WHERE id = $1", job_id) == [(0,)]
        time.sleep(1)
        assert server.count("job_step", "job_id = $1", job_id) == stored  # paused: nothing runs
        assert client.post(f"/api/v1/jobs/{job_id}/pause").status_code == 409  # paused already
        assert client.post(f"/api/v1/jobs/{job_id}/resume").status_code == 200
        done = _until(client, job_id, "SUCCESS", "FAILED")
        assert done["status"] == "SUCCESS" and done["result"] == sum(range(30))
        lines = [line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json()]
        assert all(lines.count(f"step {i} runs") == 1 for i in range(30)), lines


def test_pause_takes_a_waiting_workflow_at_once(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/sdk/events", EVENTS)
        job_id = _start(client, "f/sdk/events", {})
        _until(client, job_id, "WAITING")
        assert client.post(f"/api/v1/jobs/{job_id}/pause").json()["status"] == "PAUSED"
        time.sleep(2.5)  # its timer passes: a paused run stays paused
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "PAUSED"
        client.post(f"/api/v1/jobs/{job_id}/resume")
        _until(client, job_id, "WAITING")  # its next turn: waiting for the event "paid"
        client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "paid", "payload": 1})
        assert _until(client, job_id, "SUCCESS")["result"]["early"] == 1
