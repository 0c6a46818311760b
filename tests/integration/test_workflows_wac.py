"""Windmill's workflows as code run unchanged with the official `wmill`: tasks become child runs,
`wmill.step` checkpoints through the inline fast path (or its fallback), sleeps and approvals
suspend the workflow holding no process, and what Windmill returns is what comes back."""

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

# From Windmill's guide to workflows as code (tasks, task_script, step, parallel, sleep, an
# approval addressed by its key), as a user would save it.
DOCS_WORKFLOW = """
from datetime import datetime

from wmill import task, task_script, step, sleep, wait_for_approval, get_approval_urls, parallel, workflow


@task()
async def process(x: str) -> str:
    return f"processed: {x}"


existing = task_script("f/data/extract", timeout=600)


def send_approval_email(resume: str, cancel: str) -> str:
    print(f"approve: {resume} / refuse: {cancel}")
    return "sent"


@workflow
async def main(x: str, items: list[str]):
    started_at = await step("started_at", lambda: datetime.now().isoformat())
    result = await process(x)
    many = await parallel(items, process, concurrency=2)
    extracted = await existing(url="https://example.com/data")
    await sleep(1)
    urls = await step("urls", lambda: get_approval_urls("manager"))
    await step("notify", lambda: send_approval_email(urls["resume"], urls["cancel"]))
    approval = await wait_for_approval(key="manager", timeout=3600)
    return {"started_at": started_at, "result": result, "many": many, "extracted": extracted, "approval": approval}
"""

EXTRACT = """
def main(url: str):
    return {"rows": 3, "from": url}
"""

FAILING = """
import wmill
from wmill import task, step, workflow, TaskError


@task
async def explode(n: int) -> int:
    raise ValueError(f"no {n}")


@workflow
async def main():
    try:
        await explode(7)
    except TaskError as error:
        caught = {"key": error.step_key, "child": error.child_job_id, "error": error.result["error"]["name"],
                  "message": str(error)}
    try:
        await step("divide", lambda: 1 / 0)
    except TaskError as error:
        divided = {"key": error.step_key, "child": error.child_job_id, "message": str(error)}
    await wmill.sleep(1)  # a turn later, the replay hands back the same failures
    return {"task": caught, "step": divided}
"""

RETRYING = """
import urllib.request
from wmill import task, workflow


@task(retry={"attempts": 2})
async def flaky(port: int) -> int:
    count = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/flaky", timeout=5).read())
    if count < 2:
        raise RuntimeError(f"attempt {count} fails")
    return count


@workflow
async def main(port: int):
    return await flaky(port)
"""

FALLBACK = """
import os
os.environ["WM_WAC_INLINE_FAST_PATH"] = "0"  # every step takes wmill's slower path: the turn's end

from wmill import step, workflow


@workflow
async def main(n: int = 3):
    values = [await step(f"s{i}", lambda i=i: i * 10) for i in range(n)]
    return values
"""

NONCE = """
import wmill
from wmill import step, wait_for_approval, workflow


@workflow
async def main():
    urls = await step("urls", lambda: wmill.get_resume_urls(approver="ann"))
    answer = await wait_for_approval(timeout=1800)
    return answer
"""

TIMING_OUT = """
from wmill import wait_for_approval, workflow


@workflow
async def main():
    return await wait_for_approval(key="quick", timeout=1)
"""

WITH_FLOW = """
from wmill import task, task_flow, workflow

pipeline = task_flow("f/etl/double")


@task(timeout=90, priority=3)
async def add(a: int, b: int) -> int:
    return a + b


@workflow
async def main(n: int):
    total = await add(n, 1)
    return await pipeline(n=total)
"""

FLOW_YAML = """
name: double
namespace: etl
inputs:
  - {name: n, type: integer, required: true}
tasks:
  - name: twice
    type: util.set
    properties: {value: "{{ inputs.n * 2 }}"}
outputs:
  doubled: "{{ outputs.twice.value }}"
"""


def _save(client: httpx.Client, path: str, content: str) -> dict[str, Any]:
    answer = client.post("/api/v1/scripts", json={"path": path, "content": content})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def _start(client: httpx.Client, path: str, args: dict[str, Any]) -> str:
    answer = client.post(f"/api/v1/jobs/run/p/{path}", json=args)
    assert answer.status_code == 201, answer.text
    return answer.json()["jobId"]


def _until(client: httpx.Client, job_id: str, *statuses: str, timeout_s: float = 60, approval: bool = False) -> dict:
    def reached() -> dict | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if approval and job["status"] == "WAITING" and not (job["waitingFor"] or {}).get("approval"):
            return None
        if job["status"] in ("FAILED", "CANCELLED", "TIMED_OUT") and job["status"] not in statuses:
            raise AssertionError(f"job {job_id} ended {job['status']}: {job['error']}")
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


def test_the_documented_workflow_runs_unchanged_and_gives_windmills_results(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/data/extract", EXTRACT)
        saved = _save(client, "f/docs/workflow", DOCS_WORKFLOW)
        assert saved["workflow"] == "f.docs.workflow"
        job_id = _start(client, "f/docs/workflow", {"x": "a", "items": ["b", "c", "d"]})
        waiting = _until(client, job_id, "WAITING", approval=True)
        assert waiting["kind"] == "workflow" and waiting["waitingFor"]["approval"] == "manager"
        steps = _steps(server, job_id)
        # Each task was a child run; the approval's URLs are bound to its key.
        children = server.query("SELECT kind, path, status FROM job WHERE parent_job = $1 ORDER BY created_at", job_id)
        assert sorted(children) == sorted([("task", "f/docs/workflow", "SUCCESS")] * 4 + [("script", "f/data/extract", "SUCCESS")])
        assert "/manager/" in steps["urls"]["resume"] and steps["notify"] == "sent"
        answered = httpx.post(steps["urls"]["resume"], json={"comment": "ship it"})
        assert answered.status_code == 200, answered.text
        done = _until(client, job_id, "SUCCESS")
        result = done["result"]
        assert result["started_at"] == steps["started_at"]  # checkpointed: the same on every replay
        assert result["result"] == "processed: a"
        assert result["many"] == ["processed: b", "processed: c", "processed: d"]
        assert result["extracted"] == {"rows": 3, "from": "https://example.com/data"}
        assert result["approval"] == {"value": {"comment": "ship it"}, "approver": "anonymous", "approved": True}
        # The steps ran once, whatever the number of turns.
        lines = [line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json()]
        assert sum("approve: " in line for line in lines) == 1
        stored = _steps(server, job_id)
        assert stored["sleep"] is None and "wac-sleep:sleep" in stored
        assert [k for k in stored if not k.startswith(("wac", "approval:"))] == [
            "started_at", "process", "process_2", "process_3", "process_4", "extract", "sleep", "urls", "notify",
            "manager"]


def test_failures_of_tasks_and_steps_are_task_errors_the_same_on_replay(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/failing", FAILING)
        job_id = _start(client, "f/wac/failing", {})
        done = _until(client, job_id, "SUCCESS")
        caught = done["result"]["task"]
        assert caught["key"] == "explode" and caught["error"] == "ValueError" and caught["message"] == "no 7"
        child = client.get(f"/api/v1/jobs/{caught['child']}").json()
        assert child["status"] == "FAILED" and child["parentJob"] == job_id and child["kind"] == "task"
        assert done["result"]["step"] == {"key": "divide", "child": None, "message": "division by zero"}
        stored = _steps(server, job_id)["divide"]
        assert stored["__wmill_error"] is True and stored["result"]["error"]["name"] == "ZeroDivisionError"


def test_a_tasks_retry_policy_dispatches_it_again(server: FlowmillServer, counter: tuple[int, dict[str, int]]) -> None:
    port, counts = counter
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/retrying", RETRYING)
        job_id = _start(client, "f/wac/retrying", {"port": port})
        done = _until(client, job_id, "SUCCESS")
        assert done["result"] == 2 and counts["/flaky"] == 2
        steps = _steps(server, job_id)
        assert steps["flaky"]["__wmill_error"] is True and steps["flaky#2"] == 2
        assert steps["retry:flaky"]["attempt"] == 1  # the attempts that failed, as Flowmill's steps keep them


def test_steps_take_the_slower_path_when_the_fast_one_is_off(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/fallback", FALLBACK)
        job_id = _start(client, "f/wac/fallback", {"n": 3})
        assert _until(client, job_id, "SUCCESS")["result"] == [0, 10, 20]


def test_resume_urls_that_name_no_step_answer_the_approval_waited_for(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/nonce", NONCE)
        job_id = _start(client, "f/wac/nonce", {})
        _until(client, job_id, "WAITING", approval=True)
        urls = _steps(server, job_id)["urls"]
        assert httpx.post(urls["resume"], json={"ok": True}).status_code == 200
        done = _until(client, job_id, "SUCCESS")
        assert done["result"] == {"value": {"ok": True}, "approver": "ann", "approved": True}


def test_a_refused_approval_cancels_and_one_not_given_in_time_cancels(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/docs/workflow", DOCS_WORKFLOW)
        _save(client, "f/data/extract", EXTRACT)
        job_id = _start(client, "f/docs/workflow", {"x": "a", "items": []})
        _until(client, job_id, "WAITING", approval=True)
        assert httpx.get(_steps(server, job_id)["urls"]["cancel"]).status_code == 200
        assert "refused" in _until(client, job_id, "CANCELLED")["error"]["message"]
        _save(client, "f/wac/timing_out", TIMING_OUT)
        quick = _start(client, "f/wac/timing_out", {})
        cancelled = _until(client, quick, "CANCELLED", timeout_s=30)
        assert cancelled["error"]["name"] == "ApprovalTimeout"


def test_task_options_become_the_child_runs_policy_and_task_flow_runs_a_flow(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        flow = client.post("/api/v1/flows", json={"yamlContent": FLOW_YAML})
        assert flow.status_code in (200, 201), flow.text
        _save(client, "f/wac/with_flow", WITH_FLOW)
        job_id = _start(client, "f/wac/with_flow", {"n": 4})
        done = _until(client, job_id, "SUCCESS")
        assert done["result"] == {"doubled": 10}
        children = server.query(
            "SELECT kind, path, timeout_ms, priority FROM job WHERE parent_job = $1 ORDER BY created_at", job_id)
        assert children == [("task", "f/wac/with_flow", 90000, 3), ("flow", "f/etl/double", None, 0)]


INTRUDER = """
import os
import httpx


def main(other: str):
    answer = httpx.post(f"{os.environ['BASE_INTERNAL_URL']}/api/w/main/jobs/wac/inline_checkpoint/{other}",
                        json={"key": "forged", "result": 1},
                        headers={"Authorization": f"Bearer {os.environ['WM_TOKEN']}"})
    return answer.status_code
"""


def test_the_inline_checkpoint_takes_the_runs_own_token_only(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/timing_out", TIMING_OUT.replace("timeout=1", "timeout=600"))
        _save(client, "f/wac/intruder", INTRUDER)
        job_id = _start(client, "f/wac/timing_out", {})
        _until(client, job_id, "WAITING", approval=True)
        intruder = client.post("/api/v1/jobs/run_wait_result/p/f/wac/intruder", json={"other": job_id})
        assert intruder.json() == 403  # another run's token
        answer = client.post(f"/api/w/main/jobs/wac/inline_checkpoint/{job_id}", json={"key": "forged", "result": 1})
        assert answer.status_code == 403, answer.text  # a person's token
        assert "forged" not in _steps(server, job_id)
        client.post(f"/api/v1/jobs/{job_id}/cancel")


MANY_STEPS = """
import time
from wmill import step, workflow


def work(i: int) -> int:
    print(f"step {i} runs")
    time.sleep(0.05)
    return i


@workflow
async def main(n: int = 40):
    return sum([await step(f"s{i}", lambda i=i: work(i)) for i in range(n)])
"""


def test_pause_stops_a_windmill_workflow_at_its_next_step(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/many", MANY_STEPS)
        job_id = _start(client, "f/wac/many", {"n": 40})
        wait_for(lambda: server.count("job_step", "job_id = $1", job_id) >= 3, 30, "three steps")
        assert client.post(f"/api/v1/jobs/{job_id}/pause").status_code == 200
        paused = _until(client, job_id, "PAUSED", "SUCCESS")
        assert paused["status"] == "PAUSED"
        stored = server.count("job_step", "job_id = $1", job_id)
        assert stored < 40
        time.sleep(0.5)
        assert server.count("job_step", "job_id = $1", job_id) == stored
        assert client.post(f"/api/v1/jobs/{job_id}/resume").status_code == 200
        done = _until(client, job_id, "SUCCESS")
        assert done["result"] == sum(range(40))
        lines = [line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json()]
        assert all(lines.count(f"step {i} runs") == 1 for i in range(40))


EARLY = """
from wmill import get_approval_urls, sleep, step, wait_for_approval, workflow


@workflow
async def main():
    await step("urls", lambda: get_approval_urls("early"))
    await sleep(2)
    return await wait_for_approval(key="early")
"""


def test_an_approval_answered_before_the_workflow_waits_for_it_is_kept(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/wac/early", EARLY)
        job_id = _start(client, "f/wac/early", {})
        _until(client, job_id, "WAITING")  # asleep, not waiting for the approval yet
        assert httpx.post(_steps(server, job_id)["urls"]["resume"], json={"early": 1}).status_code == 200
        done = _until(client, job_id, "SUCCESS", timeout_s=30)
        assert done["result"] == {"value": {"early": 1}, "approver": "anonymous", "approved": True}
