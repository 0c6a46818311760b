"""A sync route's answer as its run sets it (status, content type, headers, raw text and bytes,
under Flowmill's and Windmill's names), what a run may not set, and per-route CORS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer

# The route's body says what main returns: one script tries every shape of answer.
SHAPE = "def main(**a):\n    return a['out']\n"
BYTES = ("def main():\n    return {'flowmill_content_type': 'image/png', 'flowmill_headers': {'X-Kind': 'png'},\n"
         "            'result': bytes([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255])}\n")
BYTES_DEFAULT = "def main():\n    return {'windmill_headers': {'X-Kind': 'raw'}, 'result': b'\\x00\\xffraw'}\n"
FAIL = "def main(**a):\n    raise ValueError('boom')\n"
ORIGIN = "https://app.example"
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> Iterator[httpx.Client]:
    with server.client(server.admin_token()) as client:
        for path, content in (("f/resp/shape", SHAPE), ("f/resp/bytes", BYTES), ("f/resp/bytes_default", BYTES_DEFAULT),
                              ("f/resp/fail", FAIL)):
            assert client.post("/api/v1/scripts", json={"path": path, "content": content}).status_code in (200, 201)
        for path, script, method in (("resp/shape", "f/resp/shape", "POST"), ("resp/bytes", "f/resp/bytes", "GET"),
                                     ("resp/bytes-default", "f/resp/bytes_default", "GET"),
                                     ("resp/fail", "f/resp/fail", "POST")):
            created = client.post("/api/v1/routes", json={"path": path, "method": method, "requestType": "sync",
                                                          "runnable": {"kind": "script", "path": script}})
            assert created.status_code == 201, created.text
        yield client


def _answer(server: FlowmillServer, out: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/r/resp/shape", json={"out": out})


def _route(api: httpx.Client, path: str, **spec: Any) -> dict[str, Any]:
    body = {"path": path, "method": "POST", "requestType": "sync",
            "runnable": {"kind": "script", "path": "f/resp/shape"}, **spec}
    created = api.post("/api/v1/routes", json=body)
    assert created.status_code == 201, created.text
    return created.json()


# -- the answer a result sets -------------------------------------------------------------------


def test_flowmill_names_set_status_headers_and_json_body(server: FlowmillServer, api: httpx.Client) -> None:
    answer = _answer(server, {"flowmill_status_code": 201, "flowmill_headers": {"X-Custom": "a b", "Set-Cookie": "s=1; HttpOnly"},
                              "result": {"ok": True}})
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"ok": True}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-custom"] == "a b"
    assert answer.headers["set-cookie"] == "s=1; HttpOnly"  # Windmill allows it; so do we
    assert answer.headers["x-job-id"]


def test_windmill_names_serve_text_raw_with_its_content_type(server: FlowmillServer, api: httpx.Client) -> None:
    answer = _answer(server, {"windmill_status_code": 202, "windmill_content_type": "text/csv",
                              "windmill_headers": {"Content-Disposition": 'attachment; filename="a.csv"'},
                              "result": "a;b\n1;2\n"})
    assert answer.status_code == 202, answer.text
    assert answer.content == b"a;b\n1;2\n"  # the text itself, not a JSON string
    assert answer.headers["content-type"] == "text/csv"
    assert answer.headers["content-disposition"] == 'attachment; filename="a.csv"'
    assert answer.headers["content-security-policy"] == SANDBOX  # the author's content on the API's origin
    assert answer.headers["x-content-type-options"] == "nosniff"
    newer = _answer(server, {"wm_status_code": 200, "wm_content_type": "text/plain; charset=utf-8", "result": "héllo"})
    assert newer.status_code == 200 and newer.content == "héllo".encode()
    assert newer.headers["content-type"] == "text/plain; charset=utf-8"


def test_html_is_served_as_html(server: FlowmillServer, api: httpx.Client) -> None:
    answer = _answer(server, {"flowmill_content_type": "text/html", "result": "<h1>hi</h1>"})
    assert answer.status_code == 200
    assert answer.text == "<h1>hi</h1>"
    assert answer.headers["content-type"] == "text/html"
    own = _answer(server, {"flowmill_content_type": "text/html", "flowmill_headers": {"Content-Security-Policy": "default-src 'self'"},
                           "result": "<p>x</p>"})
    assert own.headers["content-security-policy"] == f"default-src 'self', {SANDBOX}"  # both policies hold


def test_content_type_with_an_object_body_is_its_json(server: FlowmillServer, api: httpx.Client) -> None:
    answer = _answer(server, {"flowmill_content_type": "application/vnd.api+json", "result": {"a": [1, 2]}})
    assert answer.headers["content-type"] == "application/vnd.api+json"
    assert answer.json() == {"a": [1, 2]}


def test_bytes_are_served_raw(server: FlowmillServer, api: httpx.Client) -> None:
    answer = httpx.get(f"{server.url}/api/r/resp/bytes")
    assert answer.status_code == 200, answer.text
    assert answer.content == bytes([0x89, 0x50, 0x4E, 0x47, 0, 1, 2, 255])
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-kind"] == "png"
    default = httpx.get(f"{server.url}/api/r/resp/bytes-default")
    assert default.status_code == 200, default.text
    assert default.content == b"\x00\xffraw"
    assert default.headers["content-type"] == "application/octet-stream"
    # The run's record keeps the result as JSON: base64 text, marked as such.
    job = api.get(f"/api/v1/jobs/{default.headers['x-job-id']}").json()
    assert job["result"]["flowmill_content_transfer_encoding"] == "base64"
    explicit = _answer(server, {"wm_content_transfer_encoding": "base64", "result": "AAEC"})
    assert explicit.content == b"\x00\x01\x02" and explicit.headers["content-type"] == "application/octet-stream"


def test_no_result_is_no_body(server: FlowmillServer, api: httpx.Client) -> None:
    empty = _answer(server, {"flowmill_headers": {"X-A": "1"}})
    assert empty.status_code == 204 and empty.content == b"" and empty.headers["x-a"] == "1"
    moved = _answer(server, {"flowmill_status_code": 302, "flowmill_headers": {"Location": "/elsewhere"}})
    assert moved.status_code == 302 and moved.headers["location"] == "/elsewhere"


def test_flowmill_name_wins_and_plain_results_are_unchanged(server: FlowmillServer, api: httpx.Client) -> None:
    both = _answer(server, {"flowmill_status_code": 201, "windmill_status_code": 500, "result": 1})
    assert both.status_code == 201 and both.json() == 1
    deep = {"data": {"windmill_status_code": 500, "result": "x"}}
    plain = _answer(server, deep)
    assert plain.status_code == 200 and plain.json() == deep
    text = _answer(server, "windmill_status_code")
    assert text.status_code == 200 and text.json() == "windmill_status_code"


@pytest.mark.parametrize("out, field", [
    ({"flowmill_status_code": 99, "result": 1}, "flowmill_status_code"),
    ({"windmill_status_code": 600, "result": 1}, "windmill_status_code"),
    ({"windmill_status_code": 101}, "windmill_status_code"),
    ({"flowmill_status_code": "200", "result": 1}, "flowmill_status_code"),
    ({"flowmill_status_code": True, "result": 1}, "flowmill_status_code"),
    ({"flowmill_status_code": 200.5, "result": 1}, "flowmill_status_code"),
    ({"flowmill_headers": ["X-A"], "result": 1}, "flowmill_headers"),
    ({"flowmill_headers": {"X-A": 1}, "result": 1}, "flowmill_headers"),
    ({"flowmill_content_type": "text/html\r\nX-Evil: 1", "result": "x"}, "flowmill_content_type"),
    ({"flowmill_content_type": "html", "result": "x"}, "flowmill_content_type"),
    ({"flowmill_content_transfer_encoding": "base32", "result": "x"}, "flowmill_content_transfer_encoding"),
    ({"flowmill_content_transfer_encoding": "base64", "result": "not base64!"}, "result"),
    ({"flowmill_content_transfer_encoding": "base64", "result": {"a": 1}}, "result"),
])
def test_an_invalid_answer_is_a_502_naming_it(server: FlowmillServer, api: httpx.Client, out: Any, field: str) -> None:
    answer = _answer(server, out)
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_response"
    assert error["details"]["field"] == field and error["details"]["jobId"] == answer.headers["x-job-id"]
    assert field in error["message"]


@pytest.mark.parametrize("headers", [
    {"X-A": "v\r\nSet-Cookie: evil=1"},
    {"X-A": "v\nX-B: 2"},
    {"X-A\r\nSet-Cookie": "evil=1"},
    {"Bad Name": "v"},
    {"": "v"},
    {"X-A": "\u2603"},
    {"Content-Length": "0"},
    {"transfer-encoding": "chunked"},
    {"Connection": "close"},
    {"Upgrade": "websocket"},
    {"X-Request-Id": "mine"},
])
def test_header_injection_and_server_headers_are_refused(server: FlowmillServer, api: httpx.Client,
                                                         headers: dict[str, str]) -> None:
    answer = _answer(server, {"flowmill_headers": headers, "result": "x"})
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["code"] == "invalid_response"
    assert "set-cookie" not in answer.headers and "x-b" not in answer.headers and "x-evil" not in answer.headers


def test_a_failed_run_is_422_and_an_explicit_500_is_answered_as_set(server: FlowmillServer, api: httpx.Client) -> None:
    failed = httpx.post(f"{server.url}/api/r/resp/fail", json={})
    assert failed.status_code == 422, failed.text
    error = failed.json()["error"]
    assert error["code"] == "run_failed" and error["details"]["error"]["message"] == "boom"
    explicit = _answer(server, {"windmill_status_code": 500, "result": {"error": "on purpose"}})
    assert explicit.status_code == 500
    assert explicit.json() == {"error": "on purpose"}


# -- CORS -------------------------------------------------------------------------------------------


def _jobs(api: httpx.Client) -> int:
    return len(api.get("/api/v1/jobs", params={"trigger": "route", "limit": 200}).json()["items"])


def test_preflight_is_answered_without_auth_or_run(server: FlowmillServer, api: httpx.Client) -> None:
    _route(api, "cors/keyed", auth={"kind": "api_key", "header": "X-Api-Key", "key": "k-cors-123456"},
           cors={"allowOrigins": [ORIGIN, "http://localhost:5173"], "allowHeaders": ["Content-Type", "X-Api-Key"],
                 "exposeHeaders": ["X-Job-Id"], "allowCredentials": True, "maxAgeS": 600})
    before = _jobs(api)
    answer = httpx.options(f"{server.url}/api/r/cors/keyed", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-allow-methods"] == "POST"
    assert answer.headers["access-control-allow-headers"] == "Content-Type, X-Api-Key"
    assert answer.headers["access-control-max-age"] == "600"
    assert answer.headers["vary"] == "Origin"
    assert _jobs(api) == before

    other = httpx.options(f"{server.url}/api/r/cors/keyed", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "cors_refused"
    assert not [h for h in other.headers if h.startswith("access-control-")]
    unserved = httpx.options(f"{server.url}/api/r/cors/keyed", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"})
    assert unserved.status_code == 405 and unserved.json()["error"]["code"] == "method_not_allowed"
    bare = httpx.options(f"{server.url}/api/r/cors/keyed")  # not a preflight
    assert bare.status_code == 405 and bare.headers["allow"] == "POST"


def test_actual_answers_carry_cors_headers_even_when_refused(server: FlowmillServer, api: httpx.Client) -> None:
    _route(api, "cors/auth", auth={"kind": "api_key", "header": "X-Api-Key", "key": "k-cors-654321"},
           cors={"allowOrigins": [ORIGIN], "exposeHeaders": ["X-Job-Id", "X-Custom"], "allowCredentials": True})
    url = f"{server.url}/api/r/cors/auth"
    refused = httpx.post(url, json={"out": 1}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert refused.headers["access-control-allow-credentials"] == "true"
    assert refused.headers["vary"] == "Origin"
    served = httpx.post(url, json={"out": {"flowmill_headers": {"X-Custom": "1"}, "result": 2}},
                        headers={"Origin": ORIGIN, "X-Api-Key": "k-cors-654321"})
    assert served.status_code == 200 and served.json() == 2
    assert served.headers["access-control-allow-origin"] == ORIGIN
    assert served.headers["access-control-expose-headers"] == "X-Job-Id, X-Custom"
    assert served.headers["vary"] == "Origin"
    stranger = httpx.post(url, json={"out": 1}, headers={"Origin": "https://evil.example", "X-Api-Key": "k-cors-654321"})
    assert stranger.status_code == 200
    assert "access-control-allow-origin" not in stranger.headers


def test_a_failed_run_carries_cors_headers(server: FlowmillServer, api: httpx.Client) -> None:
    created = api.post("/api/v1/routes", json={"path": "cors/fail", "method": "PUT", "requestType": "sync",
                                               "runnable": {"kind": "script", "path": "f/resp/fail"},
                                               "cors": {"allowOrigins": ["*"], "allowMethods": ["put", "POST"]}})
    assert created.status_code == 201, created.text
    failed = httpx.put(f"{server.url}/api/r/cors/fail", json={}, headers={"Origin": "https://any.example"})
    assert failed.status_code == 422
    assert failed.headers["access-control-allow-origin"] == "https://any.example"  # echoed, never *
    assert "access-control-allow-credentials" not in failed.headers
    pre = httpx.options(f"{server.url}/api/r/cors/fail", headers={
        "Origin": "https://any.example", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-thing"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-methods"] == "PUT, POST"
    assert pre.headers["access-control-allow-headers"] == "x-thing"  # none configured: those asked for


def test_a_route_without_cors_is_unchanged(server: FlowmillServer, api: httpx.Client) -> None:
    answer = httpx.post(f"{server.url}/api/r/resp/shape", json={"out": 1}, headers={"Origin": ORIGIN})
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith("access-control-")]
    pre = httpx.options(f"{server.url}/api/r/resp/shape", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 405
    assert pre.json()["error"]["code"] == "method_not_allowed"
    assert not [h for h in pre.headers if h.startswith("access-control-")]


def test_cors_round_trips_and_is_editable(server: FlowmillServer, api: httpx.Client) -> None:
    route = _route(api, "cors/edit", cors={"allowOrigins": ["HTTPS://App.Example/", "http://[::1]:8080"], "maxAgeS": 60})
    assert route["cors"] == {"allowOrigins": [ORIGIN, "http://[::1]:8080"], "allowMethods": ["POST"],
                             "allowHeaders": None, "exposeHeaders": None, "allowCredentials": False, "maxAgeS": 60}
    assert api.get(f"/api/v1/routes/{route['id']}").json()["cors"] == route["cors"]
    spec = {"method": "POST", "requestType": "sync", "runnable": {"kind": "script", "path": "f/resp/shape"},
            "cors": {"allowOrigins": ["https://other.example"], "allowCredentials": True}}
    updated = api.put(f"/api/v1/routes/{route['id']}", json=spec)
    assert updated.status_code == 200, updated.text
    assert updated.json()["cors"]["allowOrigins"] == ["https://other.example"]
    served = httpx.post(f"{server.url}/api/r/cors/edit", json={"out": 1}, headers={"Origin": "https://other.example"})
    assert served.headers["access-control-allow-origin"] == "https://other.example"
    old = httpx.post(f"{server.url}/api/r/cors/edit", json={"out": 1}, headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in old.headers
    cleared = api.put(f"/api/v1/routes/{route['id']}", json={**spec, "cors": None})
    assert cleared.json()["cors"] is None
    assert "access-control-allow-origin" not in httpx.post(
        f"{server.url}/api/r/cors/edit", json={"out": 1}, headers={"Origin": "https://other.example"}).headers


@pytest.mark.parametrize("cors, says", [
    ({"allowOrigins": []}, "allowOrigins"),
    ({}, "allowOrigins"),
    ({"allowOrigins": "https://a.example"}, "allowOrigins"),
    ({"allowOrigins": ["*"], "allowCredentials": True}, "allowCredentials"),
    ({"allowOrigins": ["not an origin"]}, "allowOrigins"),
    ({"allowOrigins": ["https://a.example/path"]}, "allowOrigins"),
    ({"allowOrigins": ["https://a.example\r\nX-Evil: 1"]}, "allowOrigins"),
    ({"allowOrigins": [f"https://a{i}.example" for i in range(33)]}, "allowOrigins"),
    ({"allowOrigins": ["https://a.example"], "maxAgeS": -1}, "maxAgeS"),
    ({"allowOrigins": ["https://a.example"], "maxAgeS": 10**6}, "maxAgeS"),
    ({"allowOrigins": ["https://a.example"], "allowMethods": ["TRACE"]}, "allowMethods"),
    ({"allowOrigins": ["https://a.example"], "allowHeaders": ["bad header"]}, "allowHeaders"),
    ({"allowOrigins": ["https://a.example"], "exposeHeaders": ["x\r\ny"]}, "exposeHeaders"),
    ({"allowOrigins": ["https://a.example"], "allowCredentials": "yes"}, "allowCredentials"),
    ({"allowOrigins": ["https://a.example"], "origins": ["x"]}, "origins"),
])
def test_bad_cors_is_a_400_naming_it(api: httpx.Client, cors: dict[str, Any], says: str) -> None:
    answer = api.post("/api/v1/routes", json={"path": "cors/bad", "method": "POST", "cors": cors,
                                              "runnable": {"kind": "script", "path": "f/resp/shape"}})
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]["message"]
