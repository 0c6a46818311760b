"""The official `wmill` client (from PyPI) works unchanged against Flowmill: from outside,
and inside Flowmill scripts."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest
from wmill.client import Windmill

from tests.support import FlowmillServer

MUST_SHOW = '''
import os
import wmill

def main(data: bytes, greeting: str = "hello", options: dict = {"loud": False}, tags: list = ["a", "b"]):
    count = (wmill.get_state() or {"count": 0})["count"] + 1
    wmill.set_state({"count": count})
    return {
        "secret": wmill.get_variable("u/admin/api_key"),
        "user": os.environ["WM_USERNAME"],
        "data": data.decode(),
        "greeting": greeting,
        "options": options,
        "tags": tags,
        "count": count,
    }
'''

INSIDE = '''
import os
import wmill

def main():
    me = wmill.whoami()
    wmill.set_variable("u/admin/from_script", "written inside")
    wmill.set_resource("u/admin/db_from_script", {"host": "db.local"}, "postgresql")
    wmill.set_resource("u/admin/untyped", [1, 2])
    wmill.set_progress(42)
    wmill.set_flow_user_state("k", {"v": 1})
    child = wmill.run_script_by_path("u/admin/add", args={"a": 2, "b": 3})
    async_id = wmill.run_script_by_path_async("u/admin/add", args={"a": 1, "b": 1})
    wmill.append_to_result_stream("first part")
    return {
        "me": me["username"],
        "version": wmill.get_version(),
        "resource": wmill.get_resource("u/admin/db_from_script"),
        "untyped": wmill.get_resource("u/admin/untyped"),
        "variable": wmill.get_variable("u/admin/from_script"),
        "progress": wmill.get_progress(),
        "flow_state": wmill.get_flow_user_state("k"),
        "child": child,
        "async_result": wmill.Windmill().wait_job(async_id),
        "root": wmill.get_root_job_id(),
        "job_id": os.environ["WM_JOB_ID"],
        "resume": sorted(wmill.get_resume_urls()),
    }
'''


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    token = server.admin_token()
    with server.client(token) as client:
        for path, content in {
            "u/admin/must_show": MUST_SHOW,
            "u/admin/inside": INSIDE,
            "u/admin/add": "def main(a: int, b: int):\n    return a + b\n",
            "u/admin/fails": "def main():\n    raise ValueError('boom')\n",
            "u/admin/sleepy": "import time\ndef main(s: float = 30):\n    time.sleep(s)\n    return 'woke'\n",
        }.items():
            client.post("/api/v1/scripts", json={"path": path, "content": content}).raise_for_status()
        client.post("/api/v1/variables", json={"path": "u/admin/api_key", "value": "s3cr3t", "isSecret": True}).raise_for_status()
    return token


@pytest.fixture
def wm(server: FlowmillServer, admin: str, monkeypatch: pytest.MonkeyPatch) -> Windmill:
    """The client as it is used from another machine: configured by WM_* variables."""
    monkeypatch.setenv("WM_BASE_URL", server.url)
    monkeypatch.setenv("WM_TOKEN", admin)
    monkeypatch.setenv("WM_WORKSPACE", "main")
    return Windmill()


def run_sync(server: FlowmillServer, token: str, path: str, args: dict[str, object]) -> httpx.Response:
    with server.client(token) as client:
        return client.post(f"/api/v1/jobs/run_wait_result/p/{path}", json=args, timeout=60)


def test_a_windmill_script_runs_unchanged_and_keeps_its_state(server: FlowmillServer, admin: str) -> None:
    args = {"data": base64.b64encode(b"raw bytes").decode()}
    first = run_sync(server, admin, "u/admin/must_show", args)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "secret": "s3cr3t", "user": "admin", "data": "raw bytes", "greeting": "hello",
        "options": {"loud": False}, "tags": ["a", "b"], "count": 1,
    }
    second = run_sync(server, admin, "u/admin/must_show", {**args, "greeting": "hi", "tags": ["z"]})
    assert second.json()["count"] == 2 and second.json()["greeting"] == "hi" and second.json()["tags"] == ["z"]


def test_the_client_inside_a_script(server: FlowmillServer, admin: str) -> None:
    response = run_sync(server, admin, "u/admin/inside", {})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["me"] == "admin" and result["version"].startswith("Flowmill v")
    assert result["resource"] == {"host": "db.local"} and result["variable"] == "written inside"
    assert result["untyped"] == [1, 2]
    assert result["progress"] == 42 and result["flow_state"] == {"v": 1}
    assert result["child"] == 5 and result["async_result"] == 2
    assert result["root"] == result["job_id"]
    assert result["resume"] == ["approvalPage", "cancel", "resume"]
    with server.client(admin) as client:
        job_id = response.headers["x-job-id"]
        streamed = [l for l in client.get(f"/api/v1/jobs/{job_id}/logs").json() if l["stream"] == "result"]
        assert [l["line"] for l in streamed] == ["first part"]


def test_the_run_token_dies_with_the_run(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/scripts", json={"path": "u/admin/leak", "content": "import os\ndef main():\n    return os.environ['WM_TOKEN']\n"}).raise_for_status()
    token = run_sync(server, admin, "u/admin/leak", {}).json()
    with server.client(token) as client:
        assert client.get("/api/v1/kv/ns").status_code == 401


def test_the_client_from_outside(server: FlowmillServer, wm: Windmill) -> None:
    assert wm.whoami()["username"] == "admin"
    assert wm.version.startswith("Flowmill v")
    wm.set_variable("u/admin/outside", "v1")
    wm.set_variable("u/admin/outside", "v2")
    assert wm.get_variable("u/admin/outside") == "v2"
    wm.set_resource({"port": 5432}, "u/admin/res", "postgresql")
    wm.set_resource({"port": 5433}, "u/admin/res", "postgresql")
    assert wm.get_resource("u/admin/res") == {"port": 5433}
    assert any(r["path"] == "u/admin/res" for r in wm.list_resources(resource_type="postgresql"))
    wm.set_state({"n": 1}, path="u/admin/outside_state")
    assert wm.get_state(path="u/admin/outside_state") == {"n": 1}
    assert wm.run_script_by_path("u/admin/add", args={"a": 20, "b": 22}) == 42
    digest = httpx.get(f"{server.url}/api/v1/scripts/p/u/admin/add", headers={"Authorization": f"Bearer {wm.token}"}).json()["hash"]
    assert wm.run_script_by_hash(digest, args={"a": 1, "b": 2}) == 3
    job_id = wm.run_script_by_hash_async(digest, args={"a": 5, "b": 5})
    assert wm.wait_job(job_id) == 10
    assert wm.get_result(job_id) == 10
    assert wm.get_job(job_id)["success"] is True and wm.get_job_status(job_id) == "COMPLETED"
    assert wm.get_root_job_id(job_id) == job_id
    with pytest.raises(Exception, match="boom"):
        wm.run_script_by_path("u/admin/fails")
    new_token = wm.create_token()
    assert Windmill(base_url=server.url, token=new_token, workspace="main").whoami()["username"] == "admin"
    with pytest.raises(Exception, match="404"):
        wm.run_flow_async("f/some/flow", args={})


def test_cancel_and_status_of_a_running_job(server: FlowmillServer, wm: Windmill) -> None:
    job_id = wm.run_script_by_path_async("u/admin/sleepy", args={"s": 30})
    deadline = time.time() + 10
    while wm.get_job_status(job_id) != "RUNNING" and time.time() < deadline:
        time.sleep(0.05)
    assert wm.get_job_status(job_id) == "RUNNING"
    wm.cancel_job(job_id, reason="enough")
    deadline = time.time() + 5
    while wm.get_job_status(job_id) != "COMPLETED" and time.time() < deadline:
        time.sleep(0.05)
    job = wm.get_job(job_id)
    assert job["canceled"] is True and job["success"] is False
    with pytest.raises(Exception, match="not successful"):
        wm.wait_job(job_id)


def test_progress_from_outside(server: FlowmillServer, wm: Windmill) -> None:
    job_id = wm.run_script_by_path_async("u/admin/sleepy", args={"s": 2})
    wm.set_progress(30, job_id=job_id)
    assert wm.get_progress(job_id) == 30
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(wm.wait_job(job_id)))
    thread.start()
    thread.join(30)
    assert results == ["woke"]
