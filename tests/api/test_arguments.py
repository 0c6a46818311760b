"""Issue 13, items 1 and 9: a run's arguments are checked against the schema inferred from
`main` before the run exists (text converted to main's types, JSON checked as it is), on every
way a run starts; a preprocessor's output is checked in the child and kept as the run's args."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, FlowmillServer, wait_for

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}
TYPED = '''
from datetime import datetime
from typing import Optional

def main(step: int, ratio: float = 1.0, flag: bool = False, tags: list[str] = [], ns: list[int] = [],
         limit: Optional[int] = None, when: datetime = None, blob: bytes = b"", name: str = "x"):
    seen = {"step": step, "ratio": ratio, "flag": flag, "tags": tags, "ns": ns, "limit": limit, "name": name,
            "when": when.isoformat() if when else None, "blob": blob.decode()}
    return {k: [type(v).__name__, v] for k, v in seen.items()}
'''
OPEN = "def main(a: int, **rest):\n    return {'a': a, 'rest': rest}\n"
CONFIG = "def main(cfg: dict, n: int = 0):\n    return {'keys': sorted(cfg), 'n': n}\n"
PRE_BAD = "def preprocessor(event):\n    return {'n': event['query']['n']}\n\ndef main(n: int):\n    return n\n"
PRE_OK = ("def preprocessor(event):\n    return {'n': int(event['query']['n']), 'who': event['params']['who']}\n\n"
          "def main(n: int, who: str):\n    return {'n': n, 'who': who}\n")


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        for path, content in {"f/a/typed": TYPED, "f/a/open": OPEN, "f/a/config": CONFIG, "f/a/pre_bad": PRE_BAD,
                              "f/a/pre_ok": PRE_OK, "f/a/sched": "def main(n: int):\n    return n\n"}.items():
            assert client.post("/api/v1/scripts", json={"path": path, "content": content}).status_code in (200, 201)
        client.post("/api/v1/variables", json={"path": "f/a/word", "value": "seven"}).raise_for_status()
        client.post("/api/v1/resources", json={"path": "f/a/cfg", "resourceType": "http_bearer",
                                               "value": {"token": "t-1", "url": "https://x"}}).raise_for_status()
        yield client


def route(api: httpx.Client, path: str, script: str, method: str = "GET", **fields: object) -> None:
    body = {"path": path, "method": method, "runnable": {"kind": "script", "path": script}, "requestType": "sync", **fields}
    made = api.post("/api/v1/routes", json=body)
    assert made.status_code == 201, made.text


def wait_job(api: httpx.Client, job_id: str) -> dict[str, object]:
    return wait_for(lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["status"] in FINAL and j, 30, "the run")


def refused(answer: httpx.Response, *fields: str) -> dict[str, object]:
    """The answer is the 400 of arguments that do not fit, naming `fields`."""
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_arguments", error
    assert error["details"]["fields"] == list(fields), error
    for field in fields:
        assert field in error["message"]
    return error


def test_query_and_path_parameters_are_converted_to_mains_types(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "args/typed/:step", "f/a/typed")
    answer = httpx.get(f"{server.url}/api/r/args/typed/3", params=[
        ("ratio", "2.5"), ("flag", "true"), ("tags", "a"), ("tags", "b"), ("ns", "1"), ("ns", "2"), ("limit", ""),
        ("when", "2024-05-01T10:00:00Z"), ("blob", "aGk="), ("name", "42")])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "step": ["int", 3], "ratio": ["float", 2.5], "flag": ["bool", True], "tags": ["list", ["a", "b"]],
        "ns": ["list", [1, 2]], "limit": ["NoneType", None], "name": ["str", "42"],
        "when": ["str", "2024-05-01T10:00:00+00:00"], "blob": ["str", "hi"],
    }
    job = api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["args"]["step"] == 3 and job["args"]["ns"] == [1, 2]  # the run keeps what main got
    one = httpx.get(f"{server.url}/api/r/args/typed/0", params={"tags": "solo", "flag": "0", "limit": "7"}).json()
    assert one["tags"] == ["list", ["solo"]] and one["flag"] == ["bool", False] and one["limit"] == ["int", 7]


def test_values_that_do_not_fit_are_a_400_and_no_run(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "args/strict/:step", "f/a/typed", method="POST")
    route(api, "args/later/:step", "f/a/typed", method="POST", requestType="async")
    route(api, "args/stream/:step", "f/a/typed", method="POST", requestType="sync_sse")
    before = server.count("job")
    jobs_before = api.get("/api/v1/jobs", params={"path": "f/a/typed"}).json()["items"]
    url = f"{server.url}/api/r/args"
    refused(httpx.post(f"{url}/strict/three", json={}), "step")
    refused(httpx.post(f"{url}/strict/3?flag=maybe", json={}), "flag")
    refused(httpx.post(f"{url}/strict/3?ratio=1.5.2", json={}), "ratio")
    refused(httpx.post(f"{url}/strict/3?when=yesterday", json={}), "when")
    refused(httpx.post(f"{url}/strict/3?ns=1&ns=x", json={}), "ns")
    refused(httpx.post(f"{url}/strict/3?ratio=1&ratio=2", json={}), "ratio")
    refused(httpx.post(f"{url}/strict/3", json={"ratio": "2.5"}), "ratio")  # JSON text is not a number
    refused(httpx.post(f"{url}/strict/3", json={"flag": 1}), "flag")
    refused(httpx.post(f"{url}/strict/3", json={"tags": "a"}), "tags")
    refused(httpx.post(f"{url}/strict/3", json={"ns": [1, 2.5]}), "ns")
    refused(httpx.post(f"{url}/strict/3", json={"stpe": 1, "nme": "x"}), "stpe", "nme")
    error = refused(httpx.post(f"{url}/strict/3", json={"ns": [1, "2"], "flag": None}), "ns", "flag")
    assert error["details"]["errors"] == [{"field": "ns[1]", "message": "expected integer, got string"},
                                          {"field": "flag", "message": "expected a value, got null"}]
    refused(httpx.post(f"{url}/later/x", json={}), "step")
    refused(httpx.post(f"{url}/stream/x", json={}), "step")
    form = httpx.post(f"{url}/strict/3", data={"flag": "yes"})
    refused(form, "flag")
    assert server.count("job") == before
    assert api.get("/api/v1/jobs", params={"path": "f/a/typed"}).json()["items"] == jobs_before
    fits = httpx.post(f"{url}/strict/3", data={"flag": "1", "ratio": "0.5"})  # a form is text: converted
    assert fits.status_code == 200 and fits.json()["flag"] == ["bool", True] and fits.json()["ratio"] == ["float", 0.5]


def test_run_apis_check_missing_unknown_and_mistyped_arguments(server: FlowmillServer, api: httpx.Client) -> None:
    before = server.count("job")
    digest = api.get("/api/v1/scripts/p/f/a/typed").json()["hash"]
    for url in ("/api/v1/jobs/run_wait_result/p/f/a/typed", "/api/v1/jobs/run/p/f/a/typed",
                "/api/v1/jobs/run_and_stream/p/f/a/typed", f"/api/v1/jobs/run/h/{digest}",
                "/api/w/main/jobs/run_wait_result/p/f/a/typed", "/api/w/main/jobs/run/p/f/a/typed",
                f"/api/w/main/jobs/run_wait_result/h/{digest}"):
        refused(api.post(url, json={}), "step")
        refused(api.post(url, json={"step": "3"}), "step")
        refused(api.post(url, json={"step": 3, "steps": 4}), "steps")
    assert server.count("job") == before
    assert api.post("/api/v1/jobs/run_wait_result/p/f/a/typed", json={"step": 3}).json()["step"] == ["int", 3]
    assert api.post("/api/w/main/jobs/run_wait_result/p/f/a/typed", json={"step": 4}).json()["step"] == ["int", 4]


def test_a_main_with_kwargs_takes_unknown_arguments(server: FlowmillServer, api: httpx.Client) -> None:
    answer = api.post("/api/v1/jobs/run_wait_result/p/f/a/open", json={"a": 1, "b": "two", "c": [3]})
    assert answer.status_code == 200 and answer.json() == {"a": 1, "rest": {"b": "two", "c": [3]}}
    refused(api.post("/api/v1/jobs/run_wait_result/p/f/a/open", json={"a": "1", "b": 2}), "a")
    route(api, "args/open", "f/a/open")
    assert httpx.get(f"{server.url}/api/r/args/open?a=5&b=6").json() == {"a": 5, "rest": {"b": "6"}}


def test_references_are_checked_as_what_they_resolve_to(server: FlowmillServer, api: httpx.Client) -> None:
    resource = api.post("/api/v1/jobs/run_wait_result/p/f/a/config", json={"cfg": "$res:f/a/cfg"})
    assert resource.status_code == 200, resource.text
    assert resource.json() == {"keys": ["token", "url"], "n": 0}
    refused(api.post("/api/v1/jobs/run_wait_result/p/f/a/config", json={"cfg": {}, "n": "$var:f/a/word"}), "n")
    route(api, "args/config", "f/a/config", method="POST")  # from outside, a reference is text: not an object
    refused(httpx.post(f"{server.url}/api/r/args/config", json={"cfg": "$res:f/a/cfg"}), "cfg")


def test_webhook_arguments_are_checked(server: FlowmillServer, api: httpx.Client) -> None:
    made = api.post("/api/v1/triggers", json={"kind": "webhook", "key": "args-hook",
                                              "runnable": {"kind": "script", "path": "f/a/typed"}})
    assert made.status_code == 201, made.text
    before = server.count("job")
    refused(httpx.post(f"{server.url}/api/v1/webhook/args-hook", json={"step": "1"}), "step")
    refused(httpx.post(f"{server.url}/api/v1/webhook/args-hook", json={"step": 1, "extra": True}), "extra")
    assert server.count("job") == before
    fired = httpx.post(f"{server.url}/api/v1/webhook/args-hook", data={"step": "8"})  # a form: text, converted
    assert fired.status_code == 202
    assert wait_job(api, fired.json()["jobId"])["result"]["step"] == ["int", 8]


def test_cli_arguments_are_converted_like_a_query(server: FlowmillServer, api: httpx.Client) -> None:
    env = {**os.environ, "FLOWMILL_URL": server.url, "FLOWMILL_TOKEN": server.admin_token(), "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", "run", "f/a/typed", *args], env=env, cwd=ROOT,
                              capture_output=True, check=False, text=True, timeout=180)

    done = run("--arg", "step=3", "--arg", "name=123", "--arg", "ns=1", "--arg", "ns=2", "--arg", "flag=true")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["step"] == ["int", 3] and result["name"] == ["str", "123"] and result["ns"] == ["list", [1, 2]]
    assert result["flag"] == ["bool", True]
    bad = run("--arg", "step=three")
    assert bad.returncode != 0 and "step" in bad.stderr and "expected an integer" in bad.stderr


def test_schedule_arguments_are_checked_and_a_changed_script_fails_the_tick(server: FlowmillServer,
                                                                           api: httpx.Client) -> None:
    spec = {"kind": "schedule", "cron": "* * * * * *", "catchUp": "none", "runnable": {"kind": "script", "path": "f/a/sched"}}
    refused(api.post("/api/v1/triggers", json={**spec, "args": {"n": "1"}}), "n")
    refused(api.post("/api/v1/triggers", json={**spec, "args": {}}), "n")
    refused(api.post("/api/v1/triggers", json={**spec, "args": {"n": 1, "m": 2}}), "m")
    made = api.post("/api/v1/triggers", json={**spec, "args": {"n": 1}, "enabled": False})
    assert made.status_code == 201, made.text
    trigger_id = made.json()["id"]
    refused(api.put(f"/api/v1/triggers/{trigger_id}", json={**spec, "args": {"n": [1]}}), "n")
    # The script changes under the schedule: its saved arguments no longer fit.
    changed = api.post("/api/v1/scripts", json={"path": "f/a/sched", "content": "def main(n: str):\n    return n\n"})
    assert changed.status_code == 201
    api.put(f"/api/v1/triggers/{trigger_id}", json={**spec, "args": {"n": "1"}}).raise_for_status()
    api.post("/api/v1/scripts", json={"path": "f/a/sched", "content": "def main(n: int):\n    return n + 1\n"})
    try:
        def a_tick() -> dict[str, object] | None:
            page = api.get("/api/v1/jobs", params={"trigger": "schedule", "path": "f/a/sched"}).json()["items"]
            done = [j for j in page if j["trigger"]["detail"] == trigger_id and j["status"] in FINAL]
            return done[0] if done else None

        failed = wait_for(a_tick, 30, "a tick of the schedule")
    finally:
        api.put(f"/api/v1/triggers/{trigger_id}", json={**spec, "args": {"n": "1"}, "enabled": False}).raise_for_status()
    assert failed["status"] == "FAILED", failed
    assert failed["error"]["name"] == "InvalidArguments"
    assert "n: expected integer, got string" in failed["error"]["message"]
    assert "f/a/sched" in failed["error"]["message"]


def test_a_preprocessors_output_is_checked_in_the_child(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "args/pre_bad", "f/a/pre_bad")
    answer = httpx.get(f"{server.url}/api/r/args/pre_bad?n=3")  # the preprocessor passes "3" on as text
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]["details"]["error"]
    assert error["name"] == "InvalidArguments"
    assert error["message"] == "the arguments preprocessor(event) returned do not fit main: n: expected integer, got string"
    job = api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["status"] == "FAILED" and job["args"] == {"n": "3"}  # what the preprocessor returned


def test_a_preprocessor_run_records_mains_arguments_and_keeps_the_event(server: FlowmillServer,
                                                                        api: httpx.Client) -> None:
    route(api, "args/pre_ok/:who", "f/a/pre_ok")
    answer = httpx.get(f"{server.url}/api/r/args/pre_ok/ann?n=5")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"n": 5, "who": "ann"}
    job = api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["args"] == {"n": 5, "who": "ann"}
    assert job["event"]["kind"] == "http" and job["event"]["query"] == {"n": "5"} and job["event"]["params"] == {"who": "ann"}
    listed = api.get("/api/v1/jobs", params={"path": "f/a/pre_ok"}).json()["items"][0]
    assert listed["args"] == {"n": 5, "who": "ann"} and listed["event"] is None  # an event may be large: one job's view
    later = httpx.get(f"{server.url}/api/r/args/pre_ok/bob?n=x")  # the preprocessor itself fails: no args to record
    assert later.status_code == 422
    assert api.get(f"/api/v1/jobs/{later.headers['x-job-id']}").json()["event"]["params"] == {"who": "bob"}


def test_a_bare_list_takes_any_items(server: FlowmillServer, api: httpx.Client) -> None:
    """`def main(xs: list)` says nothing of the items (the schema shows strings, for Windmill's
    forms): any JSON items are taken; `list[int]` is checked."""
    saved = api.post("/api/v1/scripts", json={"path": "f/a/bare", "content": (
        "def main(xs: list, ns: list[int] = []):\n    return [xs, ns]\n")})
    assert saved.status_code in (200, 201), saved.text
    assert api.get("/api/v1/scripts/p/f/a/bare").json()["schema"]["properties"]["xs"]["items"] == {"type": "string"}
    answer = api.post("/api/v1/jobs/run_wait_result/p/f/a/bare", json={"xs": [1, "two", {"three": 3}]})
    assert answer.status_code == 200 and answer.json() == [[1, "two", {"three": 3}], []]
    refused(api.post("/api/v1/jobs/run_wait_result/p/f/a/bare", json={"xs": [], "ns": ["x"]}), "ns")
