"""The workflow instances API (DESIGN §4.4) through HTTP: workflows by name, instances created
one by one and in batches, listed with an opaque cursor, their details and history, every status
of the nine that one process shows, and pause, resume, restart, terminate, events and the tick
from each state where they make sense (409 where they do not)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

STEPS = '''\
from flowmill import workflow, step

@workflow
def main(n: int = 3):
    total = 0
    for i in range(n):
        total += step(f"add{i}", lambda i=i: i + 1)
    print("total", total)
    return {"total": total}
'''

NAMED = '''\
from flowmill import workflow, step

@workflow(name="billing.charge")
def main(amount: int = 1):
    return step("charge", lambda: {"charged": amount})
'''

SLOW = '''\
import time
from flowmill import workflow, step

@workflow
def main(seconds: float = 1.5):
    step("first", lambda: time.sleep(seconds) or 1)
    step("second", lambda: 2)
    return "done"
'''

EVENTS = '''\
from flowmill import workflow, step, wait_for_event, EventTimeout

@workflow
def main():
    got = wait_for_event("go")
    try:
        wait_for_event("never", timeout=1)
        late = False
    except EventTimeout:
        late = True
    return {"payload": got["payload"], "timedOut": late}
'''

FAILS = '''\
from flowmill import workflow, step

@workflow
def main():
    step("ok", lambda: 1)
    raise RuntimeError("broken on purpose")
'''


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        for path, content, extra in (("f/wf/steps", STEPS, {}), ("f/wf/named", NAMED, {}),
                                     ("f/wf/slow", SLOW, {"concurrencyLimit": 1}), ("f/wf/events", EVENTS, {}),
                                     ("f/wf/fails", FAILS, {})):
            saved = client.post("/api/v1/scripts", json={"path": path, "content": content, **extra})
            assert saved.status_code in (200, 201), saved.text
        yield client


def create(api: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"/api/workflows/{name}/instances", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def status_of(api: httpx.Client, name: str, instance_id: str) -> str:
    return api.get(f"/api/workflows/{name}/instances/{instance_id}").json()["status"]


def until(api: httpx.Client, name: str, instance_id: str, *statuses: str, timeout_s: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (i := api.get(f"/api/workflows/{name}/instances/{instance_id}").json())["status"] in statuses
                    and i, timeout_s, f"{instance_id} to be {statuses}")


def test_workflows_are_listed_by_name(api: httpx.Client) -> None:
    names = {w["name"]: w["path"] for w in api.get("/api/workflows").json()["workflows"]}
    assert names["f.wf.steps"] == "f/wf/steps" and names["billing.charge"] == "f/wf/named"


def test_create_with_an_id_complete_details_and_history(api: httpx.Client) -> None:
    made = create(api, "f.wf.steps", id="order-1", params={"n": 4})
    assert made["id"] == "order-1" and made["runNumber"] == 1
    done = until(api, "f.wf.steps", "order-1", "complete")
    assert done["output"] == {"total": 10} and done["params"] == {"n": 4} and done["endedAt"] >= done["createdAt"]
    assert api.post("/api/workflows/f.wf.steps/instances", json={"id": "order-1"}).status_code == 409
    assert api.post("/api/workflows/f.wf.steps/instances", json={"id": "x" * 65}).status_code == 400
    assert api.post("/api/workflows/no.such/instances", json={}).status_code == 404
    history = api.get("/api/workflows/f.wf.steps/instances/order-1/history",
                      params={"includeLogs": "true", "pageSize": 3}).json()
    assert [s["name"] for s in history["steps"]] == ["add0", "add1", "add2"] and history["stepsCursor"]
    rest = api.get("/api/workflows/f.wf.steps/instances/order-1/history",
                   params={"stepsCursor": history["stepsCursor"]}).json()
    assert [s["name"] for s in rest["steps"]] == ["add3"] and rest["steps"][0]["output"] == 4
    assert any("total 10" in line["message"] for line in history["logs"])
    newest = api.get("/api/workflows/f.wf.steps/instances/order-1/history", params={"order": "desc"}).json()
    assert newest["steps"][0]["name"] == "add3"
    named = create(api, "billing.charge", params={"amount": 7})
    assert until(api, "billing.charge", named["id"], "complete")["output"] == {"charged": 7}


def test_batch_is_all_or_nothing(server: FlowmillServer, api: httpx.Client) -> None:
    made = api.post("/api/workflows/f.wf.steps/instances/batch",
                    json={"instances": [{"id": f"b{n}", "params": {"n": n}} for n in range(3)]})
    assert made.status_code == 201, made.text
    assert [i["id"] for i in made.json()["instances"]] == ["b0", "b1", "b2"]
    before = server.count("job", "kind = 'workflow'")
    taken = api.post("/api/workflows/f.wf.steps/instances/batch", json={"instances": [{"id": "b9"}, {"id": "b1"}]})
    assert taken.status_code == 409 and server.count("job", "kind = 'workflow'") == before
    too_many = api.post("/api/workflows/f.wf.steps/instances/batch",
                        json={"instances": [{"id": f"m{n}"} for n in range(101)]})
    assert too_many.status_code == 400
    assert api.post("/api/workflows/f.wf.steps/instances/batch", json={"instances": [{"params": {}}]}).status_code == 400
    for n in range(3):
        until(api, "f.wf.steps", f"b{n}", "complete")


def test_list_pages_with_a_cursor_stable_under_inserts(api: httpx.Client) -> None:
    ids = [create(api, "billing.charge", id=f"page-{n}")["id"] for n in range(5)]
    first = api.get("/api/workflows/billing.charge/instances", params={"pageSize": 2}).json()
    seen = [i["id"] for i in first["instances"]]
    create(api, "billing.charge", id="page-new")  # created while paging: not in the pages after
    cursor = first["nextCursor"]
    while cursor:
        page = api.get("/api/workflows/billing.charge/instances", params={"pageSize": 2, "cursor": cursor}).json()
        seen += [i["id"] for i in page["instances"]]
        cursor = page["nextCursor"]
    assert "page-new" not in seen and len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert api.get("/api/workflows/billing.charge/instances", params={"cursor": "nonsense"}).status_code == 400
    assert api.get("/api/workflows/billing.charge/instances", params={"pageSize": 101}).status_code == 400
    for instance_id in [*ids, "page-new"]:
        until(api, "billing.charge", instance_id, "complete")
    complete = api.get("/api/workflows/billing.charge/instances", params={"status": "complete", "pageSize": 100}).json()
    assert {"page-0", "page-new"} <= {i["id"] for i in complete["instances"]}


def test_every_status_and_the_actions_from_each(api: httpx.Client) -> None:
    name = "f.wf.slow"
    create(api, name, id="slow-1", params={"seconds": 2})
    until(api, name, "slow-1", "running")
    create(api, name, id="slow-2", params={"seconds": 0.1})  # its concurrency limit is 1
    assert status_of(api, name, "slow-2") == "queued"
    assert api.post(f"/api/workflows/{name}/instances/slow-2/restart").status_code == 409  # queued
    assert api.post(f"/api/workflows/{name}/instances/slow-1/resume").status_code == 409  # running
    # A running instance stops at its next step: waitingForPause, then paused.
    paused = api.post(f"/api/workflows/{name}/instances/slow-1/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "waitingForPause"
    assert api.post(f"/api/workflows/{name}/instances/slow-1/pause").status_code == 409
    until(api, name, "slow-1", "paused")
    history = api.get(f"/api/workflows/{name}/instances/slow-1/history").json()
    assert [s["name"] for s in history["steps"]] == ["first"]  # stopped at the step boundary
    resumed = api.post(f"/api/workflows/{name}/instances/slow-1/resume")
    assert resumed.status_code == 200
    assert until(api, name, "slow-1", "complete")["output"] == "done"
    until(api, name, "slow-2", "complete")
    for verb in ("pause", "resume", "terminate"):  # complete: only restart makes sense
        assert api.post(f"/api/workflows/{name}/instances/slow-1/{verb}").status_code == 409, verb
    # waiting, then an event sent before the wait is delivered; a wait that times out raises
    create(api, "f.wf.events", id="ev-1")
    until(api, "f.wf.events", "ev-1", "waiting")
    details = api.get("/api/workflows/f.wf.events/instances/ev-1").json()
    assert details["awaitingEvent"] == "go"
    sent = api.post("/api/workflows/f.wf.events/instances/ev-1/events", json={"type": "go", "payload": {"x": 1}})
    assert sent.status_code == 202 and sent.json() == {"type": "go", "number": 1}
    assert until(api, "f.wf.events", "ev-1", "complete")["output"] == {"payload": {"x": 1}, "timedOut": True}
    create(api, "f.wf.events", id="ev-2")
    assert api.post("/api/workflows/f.wf.events/instances/ev-2/events", json={"type": "go", "payload": 2}).status_code == 202
    assert until(api, "f.wf.events", "ev-2", "complete")["output"]["payload"] == 2
    events = api.get("/api/workflows/f.wf.events/instances/ev-2/history").json()["events"]
    assert events[0]["type"] == "go" and events[0]["payload"] == 2
    assert api.post("/api/workflows/f.wf.events/instances/ev-2/events", json={"type": "go"}).status_code == 409
    # a waiting instance pauses at once, resumes, and terminates
    create(api, "f.wf.events", id="ev-3")
    until(api, "f.wf.events", "ev-3", "waiting")
    assert api.post("/api/workflows/f.wf.events/instances/ev-3/pause").json()["status"] == "paused"
    assert api.post("/api/workflows/f.wf.events/instances/ev-3/resume").status_code == 200
    until(api, "f.wf.events", "ev-3", "waiting")
    assert api.post("/api/workflows/f.wf.events/instances/ev-3/terminate").json()["status"] == "terminated"
    assert api.post("/api/workflows/f.wf.events/instances/ev-3/terminate").status_code == 409
    # errored, then a restart: a new run number, the first run's history kept
    create(api, "f.wf.fails", id="bad-1")
    errored = until(api, "f.wf.fails", "bad-1", "errored")
    assert "broken on purpose" in errored["error"]["message"]
    restarted = api.post("/api/workflows/f.wf.fails/instances/bad-1/restart")
    assert restarted.status_code == 200 and restarted.json()["runNumber"] == 2
    until(api, "f.wf.fails", "bad-1", "errored")
    first_run = api.get("/api/workflows/f.wf.fails/instances/bad-1/history", params={"runNumber": 1}).json()
    assert [s["name"] for s in first_run["steps"]] == ["ok"] and first_run["runs"] == 2
    assert api.get("/api/workflows/f.wf.fails/instances/bad-1/history", params={"runNumber": 3}).status_code == 404


def test_roles_and_the_runner_tick(server: FlowmillServer, api: httpx.Client) -> None:
    with server.client(server.user("wf-viewer", "viewer")) as viewer:
        assert viewer.get("/api/workflows").status_code == 200
        assert viewer.get("/api/workflows/f.wf.steps/instances").status_code == 200
        assert viewer.post("/api/workflows/f.wf.steps/instances", json={}).status_code == 403
        assert viewer.post("/api/workflows/f.wf.steps/instances/order-1/restart").status_code == 403
        assert viewer.post("/api/_runner/tick", json={}).status_code == 403
    refused = api.post("/api/_runner/tick", json={"maxInstances": 5, "maxSteps": 10})
    assert refused.status_code == 403 and refused.json()["error"]["details"]["reason"] == "RUNNER_TICK_DISABLED"
    assert api.put("/api/v1/settings", json={"runnerTick": True}).status_code == 200
    ticked = api.post("/api/_runner/tick", json={"maxInstances": 5, "maxSteps": 10})
    assert ticked.status_code == 200 and ticked.json()["processed"] >= 0
    assert api.put("/api/v1/settings", json={"runnerTick": False}).status_code == 200
