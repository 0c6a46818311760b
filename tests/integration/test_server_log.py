"""What the server says: an access log line per request, its level and its format."""

from __future__ import annotations

import json

import httpx

from tests.support import FlowmillServer, wait_for


def test_access_log_in_text(fresh_server: FlowmillServer) -> None:
    fresh_server.start()
    answer = httpx.get(f"{fresh_server.url}/api/v1/kv/ns/key", headers={"X-Request-Id": "probe-123"})
    assert answer.status_code == 401
    httpx.get(f"{fresh_server.url}/healthz", headers={"X-Request-Id": "probe-456"})
    line = wait_for(lambda: next((l for l in fresh_server.output().splitlines() if "probe-456" in l), None), 5, "the line")
    assert "INFO flowmill.access: GET /healthz 200 " in line and line.endswith("ms probe-456")
    refused = next(l for l in fresh_server.output().splitlines() if "probe-123" in l)
    assert "GET /api/v1/kv/{namespace}/{key} 401" in refused


def test_json_log_and_level(backend: str) -> None:
    server = FlowmillServer(backend, env={"FLOWMILL_LOG_FORMAT": "json"})
    try:
        server.start()
        httpx.get(f"{server.url}/healthz", headers={"X-Request-Id": "json-probe"})
        wait_for(lambda: "json-probe" in server.output(), 5, "the access line")
        lines = [json.loads(l) for l in server.output().splitlines() if l.startswith("{")]
        access = next(l for l in lines if l.get("requestId") == "json-probe")
        assert access["logger"] == "flowmill.access" and access["status"] == 200 and access["route"] == "/healthz"
        assert any(l["logger"] == "flowmill" and "listening" in l["message"] for l in lines)
    finally:
        server.close()
    quiet = FlowmillServer(backend, env={"FLOWMILL_LOG_LEVEL": "warning"})
    try:
        quiet.start()
        httpx.get(f"{quiet.url}/healthz", headers={"X-Request-Id": "quiet-probe"})
        quiet.stop()
        assert "quiet-probe" not in quiet.output() and "listening" not in quiet.output()
    finally:
        quiet.close()
    bad = FlowmillServer(backend, env={"FLOWMILL_LOG_LEVEL": "loud"})
    try:
        process = bad.spawn()
        assert process.wait(30) == 1
        assert "FLOWMILL_LOG_LEVEL must be" in bad.output()
    finally:
        bad.close()


def test_refusals_installs_and_crashes_are_logged(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    with server.client(server.admin_token()) as api:
        api.post("/api/v1/scripts", json={"path": "f/log/echo", "content": "def main(**a):\n    return a\n"}).raise_for_status()
        api.post("/api/v1/routes", json={"path": "log/gh", "method": "POST", "requestType": "sync",
                                         "auth": {"kind": "hmac", "preset": "github", "secret": "gh-log-secret-1"},
                                         "runnable": {"kind": "script", "path": "f/log/echo"}}).raise_for_status()
        assert httpx.post(f"{server.url}/api/r/log/gh", json={}).status_code == 401
        assert httpx.post(f"{server.url}/api/r/log/gh", json={},
                          headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}).status_code == 401
        api.post("/api/v1/scripts", json={"path": "f/log/crash", "content": "import os\ndef main():\n    os.abort()\n"}).raise_for_status()
        assert api.post("/api/v1/jobs/run_wait_result/p/f/log/crash", json={}).status_code >= 400
        deps = "import humanize\ndef main():\n    return humanize.intcomma(1234)\n"
        api.post("/api/v1/scripts", json={"path": "f/log/deps", "content": deps}).raise_for_status()
        assert api.post("/api/v1/jobs/run_wait_result/p/f/log/deps", json={}, timeout=300).json() == "1,234"
    log = wait_for(lambda: next((t for t in [server.output()] if "crashed" in t and "installed" in t), None), 10, "the lines")
    assert "refused POST /api/r/log/gh (hmac auth): no x-hub-signature-256 header" in log
    assert "refused POST /api/r/log/gh (hmac auth): signature or credentials do not match" in log
    assert "gh-log-secret-1" not in log
    assert "of f/log/crash crashed: killed by signal SIGABRT" in log
    assert "installing 1 package(s)" in log and "humanize==" in log
    assert "installed 1 package(s) into" in log and " s\n" in log
