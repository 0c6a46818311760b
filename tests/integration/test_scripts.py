"""Scripts that run: versions, schemas, isolation, limits, dependencies, recovery."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support import FlowmillServer

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        yield client


def save(api: httpx.Client, path: str, content: str, **settings: object) -> dict[str, object]:
    response = api.post("/api/v1/scripts", json={"path": path, "content": content, **settings})
    assert response.status_code in (200, 201), response.text
    return response.json()


def wait_final(api: httpx.Client, job_id: str, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not final after {timeout_s} s: {job}")


def rss_mb(pid: int) -> float:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_versions_history_and_schema(api: httpx.Client) -> None:
    first = save(api, "f/demo/greet", "def main(name: str, times: int = 2, loud: bool = False):\n    return name * times\n")
    again = api.post("/api/v1/scripts", json={"path": "f/demo/greet", "content": "def main(name: str, times: int = 2, loud: bool = False):\n    return name * times\n"})
    assert again.status_code == 200 and again.json()["hash"] == first["hash"]
    second = save(api, "f/demo/greet", "def main(name: str, times: int = 3):\n    return name * times\n")
    assert second["hash"] != first["hash"] and second["parentHash"] == first["hash"]
    schema = first["schema"]
    assert schema["required"] == ["name"] and schema["properties"]["times"] == {"type": "integer", "default": 2, "description": ""}
    history = api.get("/api/v1/scripts/history/p/f/demo/greet").json()
    assert [v["hash"] for v in history] == [second["hash"], first["hash"]]
    assert api.get(f"/api/v1/scripts/h/{first['hash']}").json()["content"].count("loud") == 1
    assert api.post("/api/v1/jobs/run_wait_result/p/f/demo/greet", json={"name": "ab"}).json() == "ababab"
    job_id = api.post(f"/api/v1/jobs/run/h/{first['hash']}", json={"name": "x"}).json()["id"]
    assert wait_final(api, job_id)["result"] == "xx"


def test_bad_scripts_are_refused_with_line_and_column(api: httpx.Client) -> None:
    response = api.post("/api/v1/scripts", json={"path": "f/demo/broken", "content": "def main(:\n    pass\n"})
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"line": 1, "column": 10}
    no_main = api.post("/api/v1/scripts", json={"path": "f/demo/nomain", "content": "x = 1\n"})
    assert no_main.status_code == 422
    assert api.post("/api/v1/scripts", json={"path": "../etc/passwd", "content": "def main(): pass"}).status_code == 400
    assert api.post("/api/v1/scripts", json={"path": "f/demo/t", "content": "def main(): pass", "timeout": -1}).status_code == 400
    assert api.get("/api/v1/scripts/p/f/demo/broken").status_code == 404
    assert api.post("/api/v1/jobs/run/p/f/demo/none", json={}).status_code == 404
    save(api, "f/demo/echo", "def main(**args):\n    return args\n")
    assert api.post("/api/v1/jobs/run/p/f/demo/echo", content=b"{bad").status_code == 400
    assert api.post("/api/v1/jobs/run/p/f/demo/echo", json=[1, 2]).status_code == 400


def test_timeout_cancel_and_crashes(server: FlowmillServer, api: httpx.Client) -> None:
    save(api, "f/limits/slow", "import time\ndef main():\n    time.sleep(60)\n", timeout=2)
    started = time.time()
    slow = api.post("/api/v1/jobs/run_wait_result/p/f/limits/slow", json={}, timeout=30)
    assert slow.status_code == 422 and slow.json()["error"]["code"] == "run_timed_out"
    assert slow.json()["error"]["details"]["status"] == "TIMED_OUT"
    assert time.time() - started < 4

    save(api, "f/limits/forever", "import time\ndef main():\n    while True:\n        time.sleep(0.01)\n")
    job_id = api.post("/api/v1/jobs/run/p/f/limits/forever", json={}).json()["id"]
    deadline = time.time() + 10
    while api.get(f"/api/v1/jobs/{job_id}").json()["status"] != "RUNNING" and time.time() < deadline:
        time.sleep(0.02)
    asked = time.time()
    api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert wait_final(api, job_id)["status"] == "CANCELLED"
    assert time.time() - asked < 2

    for name, body in {"abort": "import os\ndef main():\n    os.abort()\n",
                       "exit": "import sys\ndef main():\n    sys.exit(3)\n",
                       "segfault": "import ctypes\ndef main():\n    ctypes.string_at(0)\n",
                       "memory": "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(50_000_000))\n"}.items():
        save(api, f"f/limits/{name}", body)
        job = api.post(f"/api/v1/jobs/run_wait_result/p/f/limits/{name}", json={}, timeout=60)
        assert job.status_code == 422, name
        assert job.json()["error"]["details"]["status"] == "FAILED", name
        assert api.get("/healthz").status_code == 200
    aborted = api.get("/api/v1/jobs", params={"path": "f/limits/abort"}).json()["items"][0]
    assert aborted["error"]["name"] == "Crashed" and "SIGABRT" in aborted["error"]["message"]


def test_a_flood_of_output_is_kept_bounded(server: FlowmillServer, api: httpx.Client) -> None:
    assert server.process is not None
    before = rss_mb(server.process.pid)
    save(api, "f/limits/chatty", "def main():\n    for i in range(100_000):\n        print('line', i)\n    return 'done'\n")
    response = api.post("/api/v1/jobs/run_wait_result/p/f/limits/chatty", json={}, timeout=120)
    assert response.json() == "done"
    lines: list[dict[str, object]] = []
    while True:  # pages of at most 10,000 lines, after the last line id seen
        page = api.get(f"/api/v1/jobs/{response.headers['x-job-id']}/logs",
                       params={"after": lines[-1]["id"] if lines else 0}).json()
        if not page:
            break
        assert len(page) <= 10_000
        lines += page
    assert len(lines) == 20_001
    assert lines[0]["line"] == "line 0" and lines[19_999]["line"] == "line 19999"
    assert "truncated after 20000 lines" in lines[-1]["line"] and "80000 more lines" in lines[-1]["line"]
    assert rss_mb(server.process.pid) - before < 60


def test_dependencies_install_once(server: FlowmillServer, api: httpx.Client) -> None:
    save(api, "f/deps/human", "import humanize\ndef main(n: int):\n    return humanize.intcomma(n)\n")
    first = api.post("/api/v1/jobs/run_wait_result/p/f/deps/human", json={"n": 1234567}, timeout=180)
    assert first.status_code == 200, first.text
    assert first.json() == "1,234,567"
    cache = server.home / "cache" / "python"
    installed = sorted(p.name for p in cache.iterdir())
    started = time.time()
    second = api.post("/api/v1/jobs/run_wait_result/p/f/deps/human", json={"n": 1000}, timeout=60)
    assert second.json() == "1,000" and time.time() - started < 2
    assert sorted(p.name for p in cache.iterdir()) == installed
    assert api.get("/api/v1/scripts/p/f/deps/human").json()["lock"].count("humanize==") == 1
    save(api, "f/deps/missing", "# requirements:\n# nonexistent-package-flowmill-xyz==1.0\ndef main():\n    return 1\n")
    failed = api.post("/api/v1/jobs/run_wait_result/p/f/deps/missing", json={}, timeout=120)
    assert failed.status_code == 422 and "nonexistent-package-flowmill-xyz" in failed.json()["error"]["message"]


def test_retries_cache_priority_and_concurrency(api: httpx.Client) -> None:
    save(api, "f/policy/flaky", "import wmill\ndef main():\n    n = (wmill.get_state() or 0) + 1\n    wmill.set_state(n)\n    if n < 3:\n        raise RuntimeError(f'attempt {n}')\n    return n\n",
         retry={"attempts": 3, "backoffS": 0.1})
    job = api.post("/api/v1/jobs/run_wait_result/p/f/policy/flaky", json={}, timeout=30)
    assert job.json() == 3
    assert api.get(f"/api/v1/jobs/{job.headers['x-job-id']}").json()["attempt"] == 3

    save(api, "f/policy/cached", "import random\ndef main(x: int):\n    return random.random()\n", cacheTtl=60)
    one = api.post("/api/v1/jobs/run_wait_result/p/f/policy/cached", json={"x": 1}).json()
    assert api.post("/api/v1/jobs/run_wait_result/p/f/policy/cached", json={"x": 1}).json() == one
    assert api.post("/api/v1/jobs/run_wait_result/p/f/policy/cached", json={"x": 2}).json() != one

    save(api, "f/policy/single", "import time\ndef main():\n    time.sleep(0.3)\n    return time.time()\n", concurrencyLimit=1)
    ids = [api.post("/api/v1/jobs/run/p/f/policy/single", json={}).json()["id"] for _ in range(3)]
    jobs = [wait_final(api, i) for i in ids]
    spans = sorted((j["startedAt"], j["finishedAt"]) for j in jobs)
    assert all(later[0] >= earlier[1] - 5 for earlier, later in zip(spans, spans[1:])), spans


def test_listing_filters_and_cursor(api: httpx.Client) -> None:
    save(api, "f/list/one", "def main():\n    return 1\n")
    for _ in range(5):
        api.post("/api/v1/jobs/run_wait_result/p/f/list/one", json={})
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/jobs", params={"path": "f/list/one", "limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    assert all(j["trigger"]["kind"] == "api" for j in api.get("/api/v1/jobs", params={"path": "f/list/one"}).json()["items"])
    assert api.get("/api/v1/jobs", params={"status": "BOGUS"}).status_code == 400


def test_a_run_in_flight_is_not_left_running_after_kill_9(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    with server.client(server.admin_token()) as api:
        save(api, "f/crash/long", "import time\ndef main():\n    time.sleep(30)\n")
        save(api, "f/crash/retried", "import time, wmill\ndef main():\n    n = (wmill.get_state() or 0) + 1\n    wmill.set_state(n)\n    if n == 1:\n        time.sleep(30)\n    return n\n",
             retry={"attempts": 2, "backoffS": 0.1})
        long_id = api.post("/api/v1/jobs/run/p/f/crash/long", json={}).json()["id"]
        retried_id = api.post("/api/v1/jobs/run/p/f/crash/retried", json={}).json()["id"]
        deadline = time.time() + 10
        while time.time() < deadline and not (
            {api.get(f"/api/v1/jobs/{i}").json()["status"] for i in (long_id, retried_id)} == {"RUNNING"}
            and api.get("/api/v1/resources/p/f/crash/retried/state").status_code == 200  # its first attempt is asleep
        ):
            time.sleep(0.05)
    server.kill9()
    server.start()
    with server.client(server.admin_token()) as api:
        lost = wait_final(api, long_id)
        assert lost["status"] == "FAILED" and "stopped" in lost["error"]["message"]
        again = wait_final(api, retried_id)
        assert again["status"] == "SUCCESS" and again["result"] == 2


def sse(response: httpx.Response) -> list[tuple[str, str]]:
    events, event, data = [], "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def test_run_and_stream_and_live_logs(api: httpx.Client) -> None:
    save(api, "f/stream/talk", "import time, wmill\ndef main(n: int):\n    for i in range(n):\n        print('tick', i)\n        time.sleep(0.05)\n    wmill.append_to_result_stream('partial')\n    return n\n")
    with api.stream("POST", "/api/v1/jobs/run_and_stream/p/f/stream/talk", json={"n": 3}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    assert [d for e, d in events if e == "log"] == ["tick 0", "tick 1", "tick 2"]
    assert ("stream", "partial") in events and events[-2] == ("result", "3")
    assert events[-1][0] == "end" and json.loads(events[-1][1])["status"] == "SUCCESS"
    created = api.post("/api/v1/jobs/run/p/f/stream/talk", json={"n": 4}).json()
    job_id = created["jobId"]
    assert created["id"] == job_id  # the older name, kept
    with api.stream("GET", f"/api/v1/jobs/{job_id}/logs/stream") as response:
        events = sse(response)
    assert [d for e, d in events if e == "log"] == [f"tick {i}" for i in range(4)]
    # Every stream ends the same way: the outcome, then the id and final status.
    assert events[-2] == ("result", "4")
    assert events[-1][0] == "end" and json.loads(events[-1][1]) == {"jobId": job_id, "status": "SUCCESS"}
    save(api, "f/stream/fails", "def main():\n    raise KeyError('x')\n")
    with api.stream("POST", "/api/v1/jobs/run_and_stream/p/f/stream/fails", json={}) as response:
        *_, last, end = sse(response)
    assert last[0] == "error" and '"FAILED"' in last[1]
    assert end[0] == "end" and json.loads(end[1])["status"] == "FAILED"


def test_scripts_of_the_standard_library_run_from_the_lean_fork_server(api: httpx.Client) -> None:
    probe = "def main():\n    return sorted(n for n in ('asyncio', 'httpx', 'wmill') if n in sys.modules)\n"
    save(api, "f/demo/lean", "import sys\n" + probe)
    save(api, "f/demo/full", "import sys\nimport wmill\n" + probe)
    assert api.post("/api/v1/jobs/run_wait_result/p/f/demo/lean", json={}).json() == []
    assert api.post("/api/v1/jobs/run_wait_result/p/f/demo/full", json={}).json() == ["asyncio", "httpx", "wmill"]


def test_a_run_that_fails_is_a_422_with_its_id_and_error(server: FlowmillServer, api: httpx.Client) -> None:
    import concurrent.futures

    save(api, "f/ends/raises", "def main():\n    raise ValueError('bad input')\n")
    save(api, "f/ends/slow", "import time\ndef main():\n    time.sleep(30)\n", timeout=1)
    save(api, "f/ends/waits", "import time\ndef main():\n    time.sleep(30)\n")
    save(api, "f/ends/fine", "def main():\n    return 1\n")
    failed = api.post("/api/v1/jobs/run_wait_result/p/f/ends/raises", json={})
    assert failed.status_code == 422
    error = failed.json()["error"]
    assert error["code"] == "run_failed" and error["details"]["jobId"] == failed.headers["x-job-id"]
    assert error["details"]["error"]["name"] == "ValueError" and "bad input" in error["details"]["error"]["message"]
    assert "Traceback" in error["details"]["error"]["traceback"] and "f/ends/raises.py" in error["details"]["error"]["traceback"]
    timed_out = api.post("/api/v1/jobs/run_wait_result/p/f/ends/slow", json={}, timeout=20)
    assert timed_out.status_code == 422 and timed_out.json()["error"]["code"] == "run_timed_out"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(api.post, "/api/v1/jobs/run_wait_result/p/f/ends/waits", json={}, timeout=30)
        running = wait_for_running(api, "f/ends/waits")
        assert api.post(f"/api/v1/jobs/{running}/cancel").status_code == 200
        cancelled = waiting.result()
    assert cancelled.status_code == 422 and cancelled.json()["error"]["code"] == "run_cancelled"
    assert cancelled.json()["error"]["details"]["jobId"] == running
    # A sync route answers the same way.
    api.post("/api/v1/routes", json={"path": "ends/raises", "method": "POST", "requestType": "sync",
                                     "runnable": {"kind": "script", "path": "f/ends/raises"}}).raise_for_status()
    routed = httpx.post(f"{server.url}/api/r/ends/raises", json={})
    assert routed.status_code == 422 and routed.json()["error"]["details"]["error"]["name"] == "ValueError"
    assert api.post("/api/v1/jobs/run_wait_result/p/f/ends/fine", json={}).status_code == 200


def wait_for_running(api: httpx.Client, path: str) -> str:
    deadline = time.time() + 20
    while time.time() < deadline:
        items = api.get("/api/v1/jobs", params={"path": path, "status": "RUNNING"}).json()["items"]
        if items:
            return items[0]["id"]
        time.sleep(0.05)
    raise AssertionError(f"no run of {path} started")
