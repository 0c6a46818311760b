"""Triggers: webhooks and cron schedules, their management, and exactly-once schedule ticks."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

ECHO = "def main(**args):\n    return args\n"
FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        assert client.post("/api/v1/scripts", json={"path": "f/t/echo", "content": ECHO}).status_code in (200, 201)
        yield client


def trigger(api: httpx.Client, **fields: object) -> dict[str, object]:
    response = api.post("/api/v1/triggers", json={"runnable": {"kind": "script", "path": "f/t/echo"}, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def test_webhook_runs_its_script_with_the_body(server: FlowmillServer, api: httpx.Client) -> None:
    hook = trigger(api, kind="webhook", key="orders-in")
    answer = httpx.post(f"{server.url}/api/v1/webhook/orders-in", json={"order": 7})
    assert answer.status_code == 202
    job_id = answer.json()["jobId"]
    assert server.count("job", "id = $1", job_id) == 1  # committed before the answer
    job = wait_for(lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["status"] in FINAL and j, 20, "the run")
    assert job["result"] == {"order": 7}
    assert job["trigger"] == {"kind": "webhook", "detail": hook["id"]} and job["requestId"] == answer.headers["x-request-id"]
    assert httpx.post(f"{server.url}/api/v1/webhook/no-such-key", json={}).status_code == 404
    assert httpx.get(f"{server.url}/api/v1/webhook/orders-in").status_code == 405


def test_webhook_secret_and_disabling(server: FlowmillServer, api: httpx.Client) -> None:
    hook = trigger(api, kind="webhook", key="guarded", secret="hook-secret-77")
    assert hook["hasSecret"] is True and "hook-secret-77" not in str(hook)
    assert "hook-secret-77" not in server.dump()
    url = f"{server.url}/api/v1/webhook/guarded"
    before = server.count("job")
    assert httpx.post(url, json={}).status_code == 401
    assert httpx.post(url, json={}, headers={"X-Webhook-Secret": "hook-secret-78"}).status_code == 401
    # secrets do not travel in URLs: the query form is refused as a missing secret
    in_url = httpx.post(f"{url}?secret=hook-secret-77", json={})
    assert in_url.status_code == 401 and "X-Webhook-Secret" in in_url.json()["error"]["message"]
    assert server.count("job") == before
    assert httpx.post(url, json={}, headers={"X-Webhook-Secret": "hook-secret-77"}).status_code == 202
    disabled = api.put(f"/api/v1/triggers/{hook['id']}", json={"kind": "webhook", "runnable": hook["runnable"], "enabled": False})
    assert disabled.status_code == 200 and disabled.json()["hasSecret"] is True  # the secret was kept
    assert httpx.post(url, json={}, headers={"X-Webhook-Secret": "hook-secret-77"}).status_code == 404
    assert api.delete(f"/api/v1/triggers/{hook['id']}").status_code == 204
    assert api.get(f"/api/v1/triggers/{hook['id']}").status_code == 404


def test_bad_triggers_are_refused(server: FlowmillServer, api: httpx.Client) -> None:
    trigger(api, kind="webhook", key="taken")
    script = {"kind": "script", "path": "f/t/echo"}
    for bad in ({"kind": "webhook", "key": "has space"}, {"kind": "schedule", "cron": "* * *"},
                {"kind": "schedule", "cron": "61 * * * *"}, {"kind": "schedule", "cron": "* * * * *", "timezone": "Mars/Base"},
                {"kind": "schedule"}, {"kind": "email"}, {"kind": "schedule", "cron": "* * * * *", "catchUp": "some"}):
        assert api.post("/api/v1/triggers", json={"runnable": script, **bad}).status_code == 400, bad
    assert api.post("/api/v1/triggers", json={"kind": "webhook", "runnable": {"kind": "script", "path": "f/t/none"}}).status_code == 404
    assert api.post("/api/v1/triggers", json={"kind": "webhook", "key": "taken", "runnable": script}).status_code == 409
    viewer = server.user("trigger-viewer", "viewer")
    with server.client(viewer) as as_viewer:
        assert as_viewer.post("/api/v1/triggers", json={"kind": "webhook", "runnable": script}).status_code == 403
        assert as_viewer.get("/api/v1/triggers").status_code == 200


def test_schedule_preview_in_a_time_zone(api: httpx.Client) -> None:
    preview = api.post("/api/v1/triggers/preview", json={"cron": "0 30 9 * * MON-FRI", "timezone": "Europe/Paris", "count": 3})
    assert preview.status_code == 200
    times = preview.json()["fireTimes"]
    assert len(times) == 3 and times == sorted(times)
    import datetime
    import zoneinfo

    for at in times:
        local = datetime.datetime.fromtimestamp(at / 1000, zoneinfo.ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute, local.second) == (9, 30, 0) and local.weekday() < 5
    made = trigger(api, kind="schedule", cron="0 0 12 * * *", timezone="Asia/Tokyo", enabled=False)
    assert api.get(f"/api/v1/triggers/{made['id']}/preview", params={"count": 2}).json()["fireTimes"][0] == made["nextFireAt"]


def _ticks(server: FlowmillServer, trigger_id: str) -> list[int]:
    return [row[0] for row in server.query("SELECT scheduled_for FROM job WHERE trigger_detail = $1 ORDER BY scheduled_for",
                                           trigger_id)]


def test_schedule_fires_once_per_tick_across_restarts(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    with server.client(server.admin_token()) as api:
        api.post("/api/v1/scripts", json={"path": "f/t/echo", "content": ECHO})
        every2 = trigger(api, kind="schedule", cron="*/2 * * * * *", args={"tick": True})
        wait_for(lambda: len(_ticks(server, every2["id"])) >= 3, 10, "three ticks")
    assert server.stop() == 0
    time.sleep(2.5)  # at least one tick falls while the server is down
    server.start()
    wait_for(lambda: len(_ticks(server, every2["id"])) >= 6, 15, "more ticks after the restart")
    server.kill9()  # and once more without a chance to finish anything
    time.sleep(1.5)
    server.start()
    with server.client(server.admin_token()) as api:
        wait_for(lambda: len(_ticks(server, every2["id"])) >= 9, 15, "more ticks after kill -9")
        api.put(f"/api/v1/triggers/{every2['id']}", json={"kind": "schedule", "cron": "*/2 * * * * *", "enabled": False,
                                                         "runnable": {"kind": "script", "path": "f/t/echo"}})
    ticks = _ticks(server, every2["id"])
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    assert all(t % 2000 == 0 for t in ticks)
    assert all(b - a == 2000 for a, b in zip(ticks, ticks[1:])), f"a tick was skipped: {ticks}"  # catch-up: all
    wait_for(lambda: server.count("job", "trigger_kind = 'schedule' AND status IN ('QUEUED', 'RUNNING')") == 0, 15,
             "every run done")


def test_a_tick_is_fired_once_even_when_fired_twice(server: FlowmillServer, api: httpx.Client) -> None:
    """Two processes (or a restart) firing the same tick insert one run: its id comes from the tick."""
    from app.services.triggers import tick_job_id

    assert tick_job_id("a", 2000) == tick_job_id("a", 2000) != tick_job_id("a", 4000) != tick_job_id("b", 2000)


def test_kill_9_under_webhook_load_loses_no_accepted_run(fresh_server: FlowmillServer) -> None:
    import threading

    server = fresh_server
    server.start()
    with server.client(server.admin_token()) as api:
        api.post("/api/v1/scripts", json={"path": "f/t/echo", "content": ECHO})
        trigger(api, kind="webhook", key="load")
        api.post("/api/v1/routes", json={"path": "load/in", "method": "POST", "requestType": "async",
                                         "runnable": {"kind": "script", "path": "f/t/echo"}})
    accepted: list[str] = []
    stop = threading.Event()

    def send(url: str) -> None:
        with httpx.Client(timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    answer = client.post(url, json={"n": n})
                except httpx.HTTPError:
                    continue
                if 200 <= answer.status_code < 300:
                    accepted.append(answer.json()["jobId"])

    senders = [threading.Thread(target=send, args=(f"{server.url}{path}",))
               for path in ("/api/v1/webhook/load", "/api/r/load/in") * 4]
    for sender in senders:
        sender.start()
    wait_for(lambda: len(accepted) > 200, 20, "load")
    server.kill9()
    stop.set()
    for sender in senders:
        sender.join()
    server.start()
    ids = set(accepted)
    with server.client(server.admin_token()) as api:
        found = {row[0] for row in server.query("SELECT id FROM job")}
        assert ids <= found, f"{len(ids - found)} accepted runs were lost"

        def all_final() -> bool:
            rows = server.query("SELECT status FROM job")
            return all(status in FINAL for (status,) in rows)

        wait_for(all_final, 60, "every accepted run to finish")
        statuses = {status for (status,) in server.query("SELECT status FROM job")}
        assert statuses <= {"SUCCESS", "FAILED"}  # the ones in flight at the kill fail with the reason
        assert server.count("job", "status = 'SUCCESS'") >= len(ids) - 16
