"""No input stops the database, and bad input is a 4xx: numbers past their range, JSON nested
past 64 levels and impossible cron expressions are refused at the edge with a 400 naming what
is wrong, nothing is created, and the server goes on writing (issue 12, items 4 and 9)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.support import FlowmillServer

BIG = "100000000000000000000"  # 10**20: past 64 bits
DEEP = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 100 + "1" + "}" * 100
ECHO = "def main(x=None, **rest):\n    return x\n"


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        for path in ("f/bounds/echo", "f/bounds/other"):
            assert client.post("/api/v1/scripts", json={"path": path, "content": ECHO}).status_code in (200, 201)
        answer = client.post("/api/v1/routes", json={
            "path": "bounds/in", "method": "POST", "runnable": {"kind": "script", "path": "f/bounds/echo"},
            "requestType": "async",
        })
        assert answer.status_code == 201, answer.text
        answer = client.post("/api/v1/triggers", json={
            "kind": "webhook", "key": "bounds-in", "runnable": {"kind": "script", "path": "f/bounds/echo"},
        })
        assert answer.status_code == 201, answer.text
        yield client


def send(api: httpx.Client, method: str, path: str, body: str | None = None) -> httpx.Response:
    """`body` as it is: JSON text that a JSON library would not write (10**20 as an integer, 1e20)."""
    content = None if body is None else body.encode()
    return api.request(method, path, content=content, headers={"content-type": "application/json"})


def refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    for word in words:
        assert word in error["message"], (word, error["message"])


def still_writes(server: FlowmillServer, api: httpx.Client) -> None:
    """A later write commits, and the server says it is ready."""
    answer = api.post("/api/v1/tokens", json={"label": "after"}, timeout=10)
    assert answer.status_code == 201, answer.text
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


# -- item 4: the three attacks, exactly ------------------------------------------------------------


def test_expires_at_past_64_bits_is_a_400_and_writes_go_on(server: FlowmillServer, api: httpx.Client) -> None:
    tokens = server.count("api_token")
    refused(send(api, "POST", "/api/v1/tokens", '{"expiresAt": 1e20}'), "expiresAt")
    refused(send(api, "POST", "/api/v1/tokens", f'{{"expiresAt": {BIG}}}'), "expiresAt")
    refused(send(api, "POST", "/api/v1/tokens", '{"expiresAt": -1}'), "expiresAt")
    assert server.count("api_token") == tokens
    still_writes(server, api)


def test_priority_past_64_bits_is_a_400_and_writes_go_on(server: FlowmillServer, api: httpx.Client) -> None:
    versions = server.count("script_version")
    for priority in ("1e20", BIG, "-" + BIG):
        body = f'{{"path": "f/bounds/prio", "content": "def main():\\n    return 1\\n", "priority": {priority}}}'
        refused(send(api, "POST", "/api/v1/scripts", body), "priority")
    assert server.count("script_version") == versions
    still_writes(server, api)


@pytest.mark.parametrize("value", ["1e300", "1e20", "inf", "nan", "-1", "1e10", "soon", BIG])
@pytest.mark.parametrize("route", ["run/p/f/bounds/echo", "run/h/{digest}"])
def test_scheduled_in_secs_out_of_range_is_a_400(server: FlowmillServer, api: httpx.Client, value: str, route: str) -> None:
    digest = api.get("/api/v1/scripts/p/f/bounds/echo").json()["hash"]
    jobs = server.count("job")
    answer = api.post(f"/api/w/main/jobs/{route.format(digest=digest)}?scheduled_in_secs={value}", json={})
    refused(answer, "scheduled_in_secs")
    assert server.count("job") == jobs
    still_writes(server, api)


def test_scheduled_in_secs_in_range_still_schedules(server: FlowmillServer, api: httpx.Client) -> None:
    answer = api.post("/api/w/main/jobs/run/p/f/bounds/echo?scheduled_in_secs=3600", json={})
    assert answer.status_code == 201, answer.text
    job = api.get(f"/api/v1/jobs/{answer.text}").json()
    assert job["scheduledFor"] - job["createdAt"] >= 3_599_000


# -- item 4: every other number of a body ------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("timeout", "1e300"), ("timeout", "0"), ("timeout", "-5"),
    ("concurrencyLimit", BIG), ("concurrencyLimit", "0"), ("concurrencyLimit", "1e20"),
    ("concurrencyTimeWindowS", "1e300"), ("concurrencyTimeWindowS", "-1"),
    ("cacheTtl", "1e300"), ("cacheTtl", "-1"),
    ("retry", f'{{"attempts": {BIG}}}'), ("retry", '{"attempts": -1}'), ("retry", '{"backoffS": 1e300}'),
])
def test_script_settings_out_of_range_are_400s_naming_the_field(server: FlowmillServer, api: httpx.Client, field: str, value: str) -> None:
    body = f'{{"path": "f/bounds/settings", "content": "def main():\\n    return 1\\n", "{field}": {value}}}'
    refused(send(api, "POST", "/api/v1/scripts", body), field)
    assert not server.count("script", "path = $1", "f/bounds/settings")


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/api/w/main/job_metrics/set_progress/{job}", f'{{"percent": {BIG}}}', "percent"),
    ("POST", "/api/w/main/job_metrics/set_progress/{job}", '{"percent": 1e20}', "percent"),
    ("POST", "/api/w/main/job_metrics/set_progress/{job}", '{"percent": -1}', "percent"),
    ("POST", "/api/v1/triggers/preview", f'{{"cron": "* * * * *", "count": {BIG}}}', "count"),
    ("POST", "/api/v1/triggers/preview", '{"cron": "* * * * *", "count": 0}', "count"),
])
def test_other_body_numbers_out_of_range_are_400s(server: FlowmillServer, api: httpx.Client, method: str, path: str,
                                                   body: str, field: str) -> None:
    job = api.post("/api/v1/jobs/run/p/f/bounds/echo", json={}).json()["id"]
    refused(send(api, method, path.format(job=job), body), field)
    still_writes(server, api)


# -- item 9: numbers in query parameters and cursors --------------------------------------------------


@pytest.mark.parametrize("query", [
    "/api/v1/jobs?limit=99999999999999999999", "/api/v1/jobs?limit=-1", "/api/v1/jobs?limit=1e3",
    "/api/v1/jobs?cursor=999999999999999999999:x", "/api/v1/jobs?cursor=-5:x", "/api/v1/jobs?cursor=%C2%B2:x",
    "/api/v1/jobs?cursor=x", "/api/v1/w/main/jobs?cursor=1e30:x",
    "/api/v1/jobs/{job}/logs?after=99999999999999999999", "/api/v1/jobs/{job}/logs?after=-1",
    "/api/v1/jobs/{job}/logs?after=2147483648", "/api/v1/jobs/{job}/logs?limit=99999999999999999999",
    "/api/v1/audit?since=99999999999999999999", "/api/v1/audit?until=-1", "/api/v1/audit?cursor=99999999999999999999",
    "/api/v1/audit?cursor=2147483648", "/api/v1/audit?limit=0",
    "/api/v1/kv/ns?limit=99999999999999999999", "/api/v1/triggers/{trigger}/preview?count=99999999999999999999",
    "/api/w/main/jobs/list?per_page=99999999999999999999", "/api/w/main/resources/list?page=99999999999999999999",
    "/api/w/main/resources/list?page=0", "/api/w/main/resources/list?per_page=-1",
])
def test_query_numbers_out_of_range_are_400s(server: FlowmillServer, api: httpx.Client, query: str) -> None:
    job = api.post("/api/v1/jobs/run/p/f/bounds/echo", json={}).json()["id"]
    trigger = next(t for t in api.get("/api/v1/triggers").json() if t["kind"] == "webhook")["id"]
    answer = api.get(query.format(job=job, trigger=trigger))
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "bad_request"
    still_writes(server, api)


# -- item 9: JSON nested past 64 levels ----------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/auth/login", DEEP),
    ("POST", "/auth/login", '{"username": "admin", "password": ' + DEEP + "}"),
    ("POST", "/auth/register", DEEP_OBJECT),
    ("PUT", "/api/v1/kv/ns/deep", DEEP),
    ("PUT", "/api/v1/kv/ns/deep", DEEP_OBJECT),
    ("POST", "/api/v1/jobs/run/p/f/bounds/echo", '{"x": ' + DEEP + "}"),
    ("POST", "/api/v1/jobs/run_wait_result/p/f/bounds/echo", '{"x": ' + DEEP_OBJECT + "}"),
    ("POST", "/api/v1/jobs/run_and_stream/p/f/bounds/echo", '{"x": ' + DEEP + "}"),
    ("POST", "/api/w/main/jobs/run/p/f/bounds/echo", '{"x": ' + DEEP + "}"),
    ("POST", "/api/w/main/jobs/run_wait_result/p/f/bounds/echo", DEEP),
    ("POST", "/api/v1/resources", '{"path": "f/bounds/r", "resourceType": "object", "value": ' + DEEP_OBJECT + "}"),
    ("POST", "/api/w/main/resources/create", '{"path": "f/bounds/r", "resource_type": "object", "value": ' + DEEP + "}"),
    ("POST", "/api/v1/variables", DEEP),
    ("POST", "/api/v1/scripts", DEEP_OBJECT),
    ("POST", "/api/v1/triggers", '{"kind": "schedule", "runnable": {"kind": "script", "path": "f/bounds/echo"}, '
                                 '"cron": "* * * * *", "args": ' + DEEP_OBJECT + "}"),
    ("POST", "/api/v1/routes", DEEP),
    ("POST", "/api/v1/routes/openapi/import", DEEP),
    ("POST", "/api/v1/routes/openapi/export", '{"filters": ' + DEEP_OBJECT + "}"),
    ("POST", "/api/w/main/jobs/flow/user_states/{job}/k", DEEP),
    ("POST", "/api/w/main/jobs_u/queue/cancel/{job}", DEEP),
    ("POST", "/api/r/bounds/in", DEEP),
    ("POST", "/api/r/bounds/in", '{"x": ' + DEEP_OBJECT + "}"),
    ("POST", "/api/v1/webhook/bounds-in", DEEP),
    ("POST", "/api/v1/webhook/bounds-in", '{"x": ' + nested(65) + "}"),
])
def test_json_nested_too_deep_is_a_400(server: FlowmillServer, api: httpx.Client, method: str, path: str, body: str) -> None:
    job = api.post("/api/v1/jobs/run/p/f/bounds/echo", json={}).json()["id"]
    jobs, resources, triggers = server.count("job"), server.count("resource"), server.count("run_trigger")
    refused(send(api, method, path.format(job=job), body), "64")
    assert (server.count("job"), server.count("resource"), server.count("run_trigger")) == (jobs, resources, triggers)
    assert not server.count("kv_entry", "key = $1", "deep")
    still_writes(server, api)


def test_json_nested_64_levels_is_accepted(api: httpx.Client) -> None:
    inside_text = '"' + "[" * 500 + '"'  # brackets in a string are text, not nesting
    body = "[" * 63 + inside_text + "]" * 63
    assert send(api, "PUT", "/api/v1/kv/ns/deep-enough", "[" + body + "]").status_code == 200
    answer = send(api, "POST", "/api/v1/jobs/run_wait_result/p/f/bounds/echo", '{"x": ' + nested(63) + "}")
    assert answer.status_code == 200, answer.text


# -- item 9: impossible cron expressions ----------------------------------------------------------------


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "* * 31 2 *", "0 0 0 30 2 *"])
def test_a_cron_that_never_fires_is_a_400(server: FlowmillServer, api: httpx.Client, cron: str) -> None:
    triggers = server.count("run_trigger")
    spec = {"kind": "schedule", "runnable": {"kind": "script", "path": "f/bounds/echo"}, "cron": cron}
    refused(api.post("/api/v1/triggers", json=spec, timeout=10), "never fires")
    refused(api.post("/api/v1/triggers/preview", json={"cron": cron}, timeout=10), "never fires")
    assert server.count("run_trigger") == triggers
    made = api.post("/api/v1/triggers", json={**spec, "cron": "0 0 1 1 *"})
    assert made.status_code == 201, made.text
    refused(api.put(f"/api/v1/triggers/{made.json()['id']}", json=spec, timeout=10), "never fires")
    assert api.get(f"/api/v1/triggers/{made.json()['id']}").json()["cron"] == "0 0 1 1 *"
    assert api.delete(f"/api/v1/triggers/{made.json()['id']}").status_code == 204
    still_writes(server, api)


# -- item 9: slow bodies ---------------------------------------------------------------------------------


def trickle(server: FlowmillServer, path: str, token: str | None = None) -> tuple[float, bytes]:
    """Headers and the first byte of a 100-byte body, then nothing: (seconds to the answer, the answer)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{".encode())
        started, answer = time.monotonic(), b""
        sock.settimeout(20)
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return time.monotonic() - started, answer


def test_a_body_that_never_arrives_is_cut_with_a_408(backend: str) -> None:
    server = FlowmillServer(backend, env={"FLOWMILL_BODY_TIMEOUT_S": "2"})
    try:
        server.start()
        token = server.admin_token()
        with server.client(token) as api:
            assert api.post("/api/v1/scripts", json={"path": "f/bounds/echo", "content": ECHO}).status_code == 201
            assert api.post("/api/v1/routes", json={"path": "slow/in", "method": "POST", "requestType": "async",
                                                    "runnable": {"kind": "script", "path": "f/bounds/echo"}}).status_code == 201
            assert api.post("/api/v1/triggers", json={"kind": "webhook", "key": "slow-in", "runnable": {
                "kind": "script", "path": "f/bounds/echo"}}).status_code == 201
            tokens, jobs = server.count("api_token"), server.count("job")
            for path, auth in (("/auth/login", None), ("/api/v1/tokens", token), ("/api/r/slow/in", None),
                               ("/api/v1/webhook/slow-in", None), ("/api/v1/jobs/run/p/f/bounds/echo", token)):
                took, answer = trickle(server, path, auth)
                assert answer.startswith(b"HTTP/1.1 408"), (path, answer[:300])
                assert b"request_timeout" in answer and 1.5 < took < 10, (path, took)
            assert (server.count("api_token"), server.count("job")) == (tokens, jobs)
            # the server was answering all along, and still is
            assert api.post("/api/v1/tokens", json={"label": "after"}).status_code == 201
            assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.close()


@pytest.mark.parametrize("zone", ["x" * 5000, "../../etc/passwd", "\u0000", "/etc/localtime", "America"])
def test_a_time_zone_the_file_system_refuses_is_a_400(api: httpx.Client, zone: str) -> None:
    refused(api.post("/api/v1/triggers/preview", json={"cron": "* * * * *", "timezone": zone}), "time zone")
    spec = {"kind": "schedule", "runnable": {"kind": "script", "path": "f/bounds/echo"}, "cron": "* * * * *", "timezone": zone}
    refused(api.post("/api/v1/triggers", json=spec), "time zone")
