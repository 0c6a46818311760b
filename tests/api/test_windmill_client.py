"""The official `wmill` client (from PyPI) works unchanged against Flowmill: inside Flowmill
scripts, and from outside with WM_BASE_URL / WM_TOKEN / WM_WORKSPACE set. Real server, real
client, no mocks; every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import wmill
import wmill.client

from tests.support import FlowmillServer, wait_for

MUST_SHOW = '''
import os
import wmill

def main(data: bytes, greeting: str = "hello", options: dict = {"loud": False}, tags: list = ["a", "b"]):
    state = wmill.get_state() or {"count": 0}
    wmill.set_state({"count": state["count"] + 1})
    tags.append("run")  # each run gets fresh defaults, as in Windmill
    return {
        "secret": wmill.get_variable("u/admin/api_key"),
        "user": os.environ["WM_USERNAME"],
        "data": data.decode(),
        "greeting": greeting,
        "options": options,
        "tags": tags,
        "count": state["count"] + 1,
    }
'''

INSIDE = '''
import os
import wmill

def main(add_hash: str):
    me = wmill.whoami()
    wmill.set_variable("u/admin/from_script", "written inside")
    wmill.set_variable("u/admin/from_script", "written twice")
    wmill.set_resource("u/admin/db_from_script", {"host": "db.local"}, "postgresql")
    wmill.set_resource("u/admin/untyped", [1, 2])
    wmill.set_state({"seen": True})
    wmill.set_progress(42)
    wmill.set_flow_user_state("k", {"v": 1})
    wmill.set_flow_user_state("a key, with spaces!", [1, 2])
    by_path = wmill.run_script_by_path("u/admin/add", args={"a": 2, "b": 3})
    by_hash = wmill.run_script_by_hash(add_hash, args={"a": 4, "b": 4})
    async_id = wmill.run_script_by_path_async("u/admin/add", args={"a": 1, "b": 1})
    hash_id = wmill.run_script_by_hash_async(add_hash, args={"a": 10, "b": 1})
    waited = wmill.Windmill().wait_job(async_id)
    wmill.Windmill().wait_job(hash_id)
    sleepy = wmill.run_script_by_path_async("u/admin/sleepy", args={"s": 30})
    wmill.cancel_job(sleepy, reason="not needed")
    try:
        wmill.Windmill().wait_job(sleepy)
        cancelled = "not raised"
    except Exception as error:
        cancelled = str(error)
    wmill.append_to_result_stream("first part")
    wmill.stream_result(iter(["second", "third"]))
    return {
        "me": me["username"],
        "version": wmill.get_version(),
        "resource": wmill.get_resource("u/admin/db_from_script"),
        "untyped": wmill.get_resource("u/admin/untyped"),
        "missing": wmill.get_resource("u/admin/nothing_here", none_if_undefined=True),
        "variable": wmill.get_variable("u/admin/from_script"),
        "state": wmill.get_state(),
        "state_path": os.environ["WM_STATE_PATH"],
        "progress": wmill.get_progress(),
        "flow_state": wmill.get_flow_user_state("k"),
        "flow_state_spaces": wmill.get_flow_user_state("a key, with spaces!"),
        "flow_state_unset": wmill.get_flow_user_state("never set"),
        "by_path": by_path,
        "by_hash": by_hash,
        "async_result": waited,
        "hash_result": wmill.get_result(hash_id),
        "child_parent": wmill.get_job(async_id)["parent_job"],
        "child_root": wmill.get_root_job_id(async_id),
        "own_status": wmill.get_job_status(os.environ["WM_JOB_ID"]),
        "cancelled": cancelled,
        "cancelled_status": wmill.get_job_status(sleepy),
        "root": wmill.get_root_job_id(),
        "job_id": os.environ["WM_JOB_ID"],
        "job_path": os.environ["WM_JOB_PATH"],
        "resume": wmill.get_resume_urls(),
    }
'''

SCRIPTS = {
    "u/admin/must_show": MUST_SHOW,
    "u/admin/inside": INSIDE,
    "u/admin/add": "def main(a: int, b: int):\n    return a + b\n",
    "u/admin/fails": "def main():\n    raise ValueError('boom')\n",
    "u/admin/sleepy": "import time\ndef main(s: float = 30):\n    time.sleep(s)\n    return 'woke'\n",
    "u/admin/streams": (
        "import wmill\ndef main(n: int = 3):\n"
        "    wmill.stream_result(f'part {i}' for i in range(n))\n"
        "    wmill.append_to_result_stream('two\\nlines')\n"
        "    print('a plain log line')\n"
        "    return 'done'\n"
    ),
}


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    """The admin's token, once the scripts (one with a 1 s timeout) and a secret are saved."""
    token = server.admin_token()
    with server.client(token) as client:
        for path, content in SCRIPTS.items():
            client.post("/api/v1/scripts", json={"path": path, "content": content}).raise_for_status()
        client.post("/api/v1/scripts", json={
            "path": "u/admin/slow", "content": SCRIPTS["u/admin/sleepy"], "timeout": 1,
        }).raise_for_status()
        client.post("/api/v1/variables", json={"path": "u/admin/api_key", "value": "s3cr3t", "isSecret": True}).raise_for_status()
    return token


@pytest.fixture(scope="module")
def alice(server: FlowmillServer, admin: str) -> str:
    """A user with the executor role in `main`: may run scripts, not edit resources."""
    return server.user("alice", "executor")


def use_client(monkeypatch: pytest.MonkeyPatch, server: FlowmillServer, token: str) -> None:
    """Configure `wmill` as on another machine; its module-level client is made afresh."""
    monkeypatch.setenv("WM_BASE_URL", server.url)
    monkeypatch.setenv("WM_TOKEN", token)
    monkeypatch.setenv("WM_WORKSPACE", "main")
    for name in ("WM_JOB_ID", "WM_ROOT_FLOW_JOB_ID", "WM_FLOW_JOB_ID", "WM_STATE_PATH", "WM_STATE_PATH_NEW", "BASE_INTERNAL_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wmill.client, "_client", None)


@pytest.fixture
def outside(server: FlowmillServer, admin: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`wmill` used from outside as the admin; yields the token."""
    use_client(monkeypatch, server, admin)
    yield admin


def run_sync(server: FlowmillServer, token: str, path: str, args: dict[str, Any]) -> httpx.Response:
    with server.client(token) as client:
        return client.post(f"/api/v1/jobs/run_wait_result/p/{path}", json=args, timeout=90)


def script_hash(server: FlowmillServer, token: str, path: str) -> str:
    with server.client(token) as client:
        return str(client.get(f"/api/v1/scripts/p/{path}").json()["hash"])


def stream_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) of a text/event-stream body."""
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


# -- inside scripts ---------------------------------------------------------------------------------


def test_a_windmill_script_runs_unchanged_and_keeps_its_state(server: FlowmillServer, admin: str, alice: str) -> None:
    args = {"data": base64.b64encode(b"raw bytes").decode()}
    first = run_sync(server, alice, "u/admin/must_show", args)
    assert first.status_code == 200, first.text
    # The secret variable reached the script (it returns it); what the run leaves keeps it masked (DESIGN §8).
    assert first.json() == {
        "secret": "***", "user": "alice", "data": "raw bytes", "greeting": "hello",
        "options": {"loud": False}, "tags": ["a", "b", "run"], "count": 1,
    }
    second = run_sync(server, alice, "u/admin/must_show", {**args, "greeting": "hi", "tags": ["z"]})
    assert second.status_code == 200, second.text
    assert second.json() == {
        "secret": "***", "user": "alice", "data": "raw bytes", "greeting": "hi",
        "options": {"loud": False}, "tags": ["z", "run"], "count": 2,
    }
    third = run_sync(server, alice, "u/admin/must_show", args)
    assert third.json()["count"] == 3 and third.json()["tags"] == ["a", "b", "run"]
    with server.client(admin) as client:
        state = client.get("/api/v1/resources/p/u/admin/must_show/state").json()
    assert state["resourceType"] == "state" and state["value"] == {"count": 3}


def test_the_client_inside_a_script(server: FlowmillServer, admin: str) -> None:
    response = run_sync(server, admin, "u/admin/inside", {"add_hash": script_hash(server, admin, "u/admin/add")})
    assert response.status_code == 200, response.text
    result, job_id = response.json(), response.headers["x-job-id"]
    assert result["me"] == "admin" and result["version"].startswith("Flowmill v")
    assert result["resource"] == {"host": "db.local"} and result["untyped"] == [1, 2] and result["missing"] is None
    assert result["variable"] == "written twice"
    assert result["state"] == {"seen": True} and result["state_path"] == "u/admin/inside/state"
    assert result["progress"] == 42
    assert result["flow_state"] == {"v": 1} and result["flow_state_spaces"] == [1, 2] and result["flow_state_unset"] is None
    assert result["by_path"] == 5 and result["by_hash"] == 8 and result["async_result"] == 2 and result["hash_result"] == 11
    assert result["child_parent"] == job_id and result["child_root"] == job_id
    assert result["own_status"] == "RUNNING"
    assert "was not successful" in result["cancelled"] and "Cancelled" in result["cancelled"]
    assert result["cancelled_status"] == "COMPLETED"
    assert result["root"] == result["job_id"] == job_id and result["job_path"] == "u/admin/inside"
    assert sorted(result["resume"]) == ["approvalPage", "cancel", "resume"]
    assert all("/api/w/main/jobs_u/" in url and job_id in url for url in result["resume"].values())
    with server.client(admin) as client:
        streamed = [l["line"] for l in client.get(f"/api/v1/jobs/{job_id}/logs").json() if l["stream"] == "result"]
        assert streamed == ["first part", "second", "third"]
        assert client.get(f"/api/v1/kv/flow_user_state/{job_id}.k").json()["value"] == {"v": 1}
        resumed = client.get(result["resume"]["resume"])
    assert resumed.status_code == 409 and "waits for nothing" in resumed.json()["error"]["message"]


def test_the_result_stream_reaches_the_sse_stream(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        response = client.post("/api/v1/jobs/run_and_stream/p/u/admin/streams", json={"n": 2}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = stream_events(response)
    assert [data for name, data in events if name == "stream"] == ["part 0", "part 1", "two\nlines"]
    assert ("log", "a plain log line") in events
    assert events[-2] == ("result", '"done"') and events[-1][0] == "end"


def test_the_run_token_dies_with_the_run(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/scripts", json={"path": "u/admin/leak", "content": "import os\ndef main():\n    return os.environ['WM_TOKEN']\n"}).raise_for_status()
    token = run_sync(server, admin, "u/admin/leak", {}).json()
    with server.client(token) as client:
        assert client.get("/api/w/main/variables/get_value/u/admin/api_key").status_code == 401


# -- from outside -----------------------------------------------------------------------------------


def test_identity_version_and_tokens(server: FlowmillServer, outside: str, monkeypatch: pytest.MonkeyPatch) -> None:
    me = wmill.whoami()
    assert me["username"] == "admin" and me["is_admin"] is True and me["is_super_admin"] is True
    assert me["operator"] is False and me["email"] == "admin@flowmill.local"
    assert wmill.Windmill().version.startswith("Flowmill v")
    with pytest.warns(DeprecationWarning):
        assert wmill.get_version().startswith("Flowmill v")
    new_token = wmill.Windmill().create_token()
    assert new_token.startswith("fm_")
    use_client(monkeypatch, server, new_token)
    assert wmill.whoami()["username"] == "admin"
    with server.client() as anonymous:
        assert anonymous.get("/api/users/whoami").status_code == 401


def test_variables_resources_and_state(server: FlowmillServer, outside: str) -> None:
    wmill.set_variable("u/admin/outside", "v1")
    wmill.set_variable("u/admin/outside", "v2")
    assert wmill.get_variable("u/admin/outside") == "v2"
    wmill.set_variable("u/admin/outside_secret", "hush", is_secret=True)
    assert wmill.get_variable("var://u/admin/outside_secret") == "hush"
    with pytest.raises(Exception, match="404"):
        wmill.get_variable("u/admin/no_such_variable")

    wmill.set_resource("u/admin/res", {"port": 5432, "password": "$var:u/admin/outside_secret"}, "postgresql")
    wmill.set_resource("u/admin/res", {"port": 5433, "password": "$var:u/admin/outside_secret"}, "postgresql")
    assert wmill.get_resource("u/admin/res") == {"port": 5433, "password": "hush"}
    assert wmill.get_resource("$res:u/admin/res", interpolated=False)["password"] == "$var:u/admin/outside_secret"
    assert wmill.get_resource("u/admin/nothing", none_if_undefined=True) is None
    for n in range(3):
        wmill.set_resource(f"u/admin/listed_{n}", {"n": n}, "http_bearer" if n else "postgresql")
    listed = wmill.list_resources(resource_type="postgresql")
    assert {r["path"] for r in listed} >= {"u/admin/res", "u/admin/listed_0"}
    assert all(r["resource_type"] == "postgresql" and r["workspace_id"] == "main" for r in listed)
    page = wmill.list_resources(page=2, per_page=1)
    assert len(page) == 1 and page[0]["path"] == sorted(r["path"] for r in wmill.list_resources())[1]

    wmill.set_state({"n": 1}, path="u/admin/outside_state")
    assert wmill.get_state(path="u/admin/outside_state") == {"n": 1}
    wmill.set_state(None, path="u/admin/outside_state")
    assert wmill.get_state(path="u/admin/outside_state") is None
    assert wmill.get_state(path="u/admin/never_set_state") is None


def test_runs_results_and_failures(server: FlowmillServer, outside: str) -> None:
    assert wmill.run_script_by_path("u/admin/add", args={"a": 20, "b": 22}) == 42
    digest = script_hash(server, outside, "u/admin/add")
    assert wmill.run_script_by_hash(digest, args={"a": 1, "b": 2}) == 3
    job_id = wmill.run_script_by_hash_async(digest, args={"a": 5, "b": 5})
    assert wmill.Windmill().wait_job(job_id) == 10
    assert wmill.get_result(job_id) == 10
    job = wmill.get_job(job_id)
    assert job["type"] == "CompletedJob" and job["success"] is True and job["canceled"] is False
    assert job["id"] == job_id and job["script_path"] == "u/admin/add" and job["args"] == {"a": 5, "b": 5}
    assert job["job_kind"] == "script" and job["workspace_id"] == "main" and job["created_by"] == "admin"
    assert job["created_at"].endswith("Z") and job["started_at"].endswith("Z") and job["duration_ms"] >= 0
    assert wmill.get_job_status(job_id) == "COMPLETED"
    assert wmill.get_root_job_id(job_id) == job_id

    with pytest.raises(Exception, match="was not successful.*boom"):
        wmill.run_script_by_path("u/admin/fails")
    failed_id = wmill.run_script_by_path_async("u/admin/fails")
    with pytest.raises(Exception, match="ValueError"):
        wmill.Windmill().wait_job(failed_id)
    failed = wmill.get_result(failed_id)
    assert failed["error"]["name"] == "ValueError" and failed["error"]["message"] == "boom" and "stack" in failed["error"]

    with pytest.raises(Exception, match="Timeout"):
        wmill.run_script_by_path("u/admin/slow", args={"s": 30})

    later = wmill.run_script_by_path_async("u/admin/add", args={"a": 1, "b": 1}, scheduled_in_secs=1)
    assert wmill.get_job_status(later) == "WAITING"
    assert wmill.Windmill().wait_job(later) == 2

    with pytest.raises(Exception, match="404.*no flow at f/some/flow"):
        wmill.run_flow_async("f/some/flow", args={})
    with pytest.raises(Exception, match="400.*retry"):
        wmill.run_script_by_path_async("u/admin/add", args={"a": 1, "b": 1}, retry={"constant": {"attempts": 2, "seconds": 1}})
    with pytest.raises(Exception, match="404"):
        wmill.get_job("00000000-0000-0000-0000-000000000000")


def test_windmill_run_wait_result_routes(server: FlowmillServer, admin: str) -> None:
    digest = script_hash(server, admin, "u/admin/add")
    with server.client(admin) as client:
        by_path = client.post("/api/w/main/jobs/run_wait_result/p/u/admin/add", json={"a": 2, "b": 3}, timeout=90)
        by_hash = client.post(f"/api/w/main/jobs/run_wait_result/h/{digest}", json={"a": 4, "b": 4}, timeout=90)
        failed = client.post("/api/w/main/jobs/run_wait_result/p/u/admin/fails", json={}, timeout=90)
        timed_out = client.post("/api/w/main/jobs/run_wait_result/p/u/admin/slow", json={"s": 30}, timeout=90)
        missing = client.post("/api/w/main/jobs/run_wait_result/p/u/admin/nothing", json={}, timeout=90)
        job = client.get(f"/api/w/main/jobs_u/get/{failed.headers['x-job-id']}").json()
    assert by_path.status_code == 200 and by_path.json() == 5
    assert by_hash.status_code == 200 and by_hash.json() == 8
    assert failed.status_code == 422
    assert failed.json()["error"]["name"] == "ValueError" and failed.json()["error"]["message"] == "boom"
    assert "stack" in failed.json()["error"] and job["success"] is False
    assert timed_out.status_code == 422 and timed_out.json()["error"]["name"] == "Timeout"
    assert missing.status_code == 404


def test_cancel_and_status_of_a_running_job(server: FlowmillServer, outside: str) -> None:
    job_id = wmill.run_script_by_path_async("u/admin/sleepy", args={"s": 30})
    wait_for(lambda: wmill.get_job_status(job_id) == "RUNNING", 10, "the run starting")
    assert wmill.get_job(job_id)["type"] == "QueuedJob" and wmill.get_job(job_id)["running"] is True
    running = wmill.Windmill().get("/w/main/jobs/list", params={"running": "true", "script_path_exact": "u/admin/sleepy"})
    assert job_id in [j["id"] for j in running.json()]
    assert "canceled" in wmill.cancel_job(job_id, reason="enough")
    started = time.monotonic()
    with pytest.raises(Exception, match="was not successful"):
        wmill.Windmill().wait_job(job_id)
    assert time.monotonic() - started < 5
    job = wmill.get_job(job_id)
    assert job["canceled"] is True and job["success"] is False and wmill.get_job_status(job_id) == "COMPLETED"
    with pytest.raises(Exception, match="409.*already completed"):
        wmill.cancel_job(job_id)


def test_cancelling_a_run_the_moment_it_starts_stops_it(server: FlowmillServer, outside: str) -> None:
    """A cancel racing the executor's claim must still stop the run (it once ran to its end)."""
    for _ in range(20):
        job_id = wmill.run_script_by_path_async("u/admin/sleepy", args={"s": 30})
        wmill.cancel_job(job_id, reason="at once")
        wait_for(lambda job_id=job_id: wmill.get_job_status(job_id) == "COMPLETED", 5, "the cancel")
        assert wmill.get_job(job_id)["canceled"] is True


def test_the_reason_of_cancelling_a_running_job_is_kept(server: FlowmillServer, outside: str) -> None:
    job_id = wmill.run_script_by_path_async("u/admin/sleepy", args={"s": 30})
    wait_for(lambda: wmill.get_job_status(job_id) == "RUNNING", 10, "the run starting")
    wmill.cancel_job(job_id, reason="because I said so")
    wait_for(lambda: wmill.get_job_status(job_id) == "COMPLETED", 5, "the cancel")
    assert wmill.get_job(job_id)["canceled_reason"] == "because I said so"


def test_progress_from_outside(server: FlowmillServer, outside: str) -> None:
    job_id = wmill.run_script_by_path_async("u/admin/sleepy", args={"s": 2})
    assert wmill.get_progress(job_id) is None
    wmill.set_progress(30, job_id=job_id)
    assert wmill.get_progress(job_id) == 30
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(wmill.Windmill().wait_job(job_id)))
    thread.start()
    thread.join(30)
    assert results == ["woke"]


def test_flow_user_state_and_resume_urls(server: FlowmillServer, outside: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = wmill.run_script_by_path_async("u/admin/add", args={"a": 1, "b": 2})
    monkeypatch.setenv("WM_JOB_ID", job_id)
    wmill.set_flow_user_state("step", {"done": 1})
    assert wmill.get_flow_user_state("step") == {"done": 1}
    assert wmill.get_flow_user_state("other") is None

    urls = wmill.get_resume_urls(approver="bob")
    assert set(urls) == {"approvalPage", "resume", "cancel"}
    assert urls["resume"].startswith(f"{server.url}/api/w/main/jobs_u/resume/{job_id}/") and "approver=bob" in urls["resume"]
    with httpx.Client(timeout=10) as anonymous:  # the signature is the authority: no token
        page = anonymous.get(urls["approvalPage"])
        assert page.status_code == 200, page.text
        assert page.json()["job_id"] == job_id and page.json()["waiting"] is False and page.json()["approver"] == "bob"
        for url in (urls["resume"], urls["cancel"]):
            assert anonymous.get(url).status_code == 409
            answer = anonymous.post(url, json={"ok": True})
            assert answer.status_code == 409 and "waits for nothing" in answer.json()["error"]["message"]
        assert anonymous.get(urls["resume"].replace("approver=bob", "approver=eve")).status_code == 403
        base, _, query = urls["resume"].partition("?")
        forged = base[:-1] + ("0" if base[-1] != "0" else "1")
        assert anonymous.get(f"{forged}?{query}").status_code == 403

    monkeypatch.setenv("WM_JOB_ID", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(Exception, match="404"):  # the client asks for the root job first
        wmill.get_flow_user_state("step")
    with pytest.raises(Exception, match="404"):
        wmill.get_resume_urls()


def test_an_executor_keeps_state_but_edits_nothing_else(
    server: FlowmillServer, admin: str, alice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/resources", json={"path": "u/admin/res_for_alice", "resourceType": "postgresql", "value": {}}).raise_for_status()
    use_client(monkeypatch, server, alice)
    assert wmill.whoami()["operator"] is True and wmill.whoami()["is_admin"] is False
    wmill.set_state({"mine": True}, path="u/alice/state")
    wmill.set_state({"mine": 2}, path="u/alice/state")
    assert wmill.get_state(path="u/alice/state") == {"mine": 2}
    with pytest.raises(Exception, match="403"):
        wmill.set_resource("u/alice/db", {"host": "x"}, "postgresql")
    with pytest.raises(Exception, match="403"):
        wmill.set_variable("u/alice/v", "x")
    with pytest.raises(Exception, match="403"):  # a resource of another type is not turned into state
        wmill.set_state({"taken": True}, path="u/admin/res_for_alice")
    assert wmill.run_script_by_path("u/admin/add", args={"a": 3, "b": 4}) == 7
