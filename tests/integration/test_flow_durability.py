"""A flow execution survives `kill -9` of the server: after a restart it goes on from its last
completed task, and no task that had completed runs again."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support import FlowmillServer, wait_for

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture
def hits() -> Iterator[tuple[str, Counter[str]]]:
    """A local HTTP server counting the requests each path gets: the tasks' side effects."""
    counts: Counter[str] = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            counts[self.path] += 1
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", counts
    server.shutdown()


def test_kill_9_during_a_ten_task_flow(fresh_server: FlowmillServer, hits: tuple[str, Counter[str]]) -> None:
    base, counts = hits
    steps = []
    for n in range(10):
        steps.append(f"  - {{name: hit{n}, type: http.request, properties: {{url: '{base}/hit/{n}'}}}}")
        steps.append(f"  - {{name: pause{n}, type: util.sleep, properties: {{duration: 150ms}}}}")
    yaml_text = "name: ten\nnamespace: durable\ntasks:\n" + "\n".join(steps) + "\n"
    fresh_server.start()
    token = fresh_server.admin_token()
    with fresh_server.client(token) as api:
        created = api.post("/api/v1/flows", json={"yamlContent": yaml_text})
        assert created.status_code == 201, created.text
        execution_id = api.post(f"/api/v1/flows/{created.json()['id']}/execute", json={}).json()["executionId"]
        wait_for(lambda: counts["/hit/4"] >= 1, 20, "the fifth task")
        time.sleep(0.07)
    fresh_server.kill9()
    done_before = {row[0] for row in fresh_server.query(
        "SELECT name FROM job_step WHERE job_id = $1 AND name LIKE 'task:hit%'", execution_id)}
    assert 4 <= len(done_before) < 10
    fresh_server.start()
    with fresh_server.client(token) as api:
        result = wait_for(lambda: (e := api.get(f"/api/v1/executions/{execution_id}").json())["execution"]["status"]
                          in FINAL and e, 30, "the execution to end after the restart")
    assert result["execution"]["status"] == "SUCCESS", result
    for n in range(10):
        if f"task:hit{n}" in done_before:
            assert counts[f"/hit/{n}"] == 1, (n, counts)  # completed before the kill: never again
        else:
            assert counts[f"/hit/{n}"] >= 1, (n, counts)
    assert sum(1 for t in result["tasks"] if t["status"] == "SUCCESS") == 20
