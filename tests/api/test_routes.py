"""HTTP routes at /api/r/...: matching, request types, preprocessors, bodies, every auth
scheme (refused requests create no run), static sites, the workspace prefix, OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import zipfile

import httpx
import pytest
import yaml

from tests.support import FlowmillServer, wait_for

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        for path, content in {
            "f/r/echo": "def main(**args):\n    return args\n",
            "f/r/pre": "def preprocessor(event):\n    return {'event': event}\n\ndef main(event: dict):\n    return event\n",
            "f/r/hello": "def main(name: str = 'world'):\n    print('saying hello')\n    return f'hello {name}'\n",
            "f/r/fails": "def main():\n    raise ValueError('no luck')\n",
            "f/auth/check": "def main(event: dict):\n    return event['headers'].get('x-let-me-in') == 'please'\n",
        }.items():
            assert client.post("/api/v1/scripts", json={"path": path, "content": content}).status_code in (200, 201)
        yield client


def route(api: httpx.Client, path: str, script: str | None = "f/r/echo", **fields: object) -> dict[str, object]:
    body = {"path": path, "method": "POST", "runnable": {"kind": "script", "path": script} if script else None,
            "requestType": "sync", **fields}
    response = api.post("/api/v1/routes", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def runs(server: FlowmillServer) -> int:
    return server.count("job")


def wait_job(api: httpx.Client, job_id: str) -> dict[str, object]:
    return wait_for(lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["status"] in FINAL and j, 20, "the run")


# -- matching, request types, arguments ---------------------------------------------------------------


def test_sync_route_gets_body_params_and_query(api: httpx.Client) -> None:
    route(api, "shop/users/:id")
    answer = httpx.post(f"{api.base_url}/api/r/shop/users/42?debug=1", json={"name": "ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "ada", "debug": "1", "id": "42"}
    job = api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["trigger"] == {"kind": "route", "detail": "POST shop/users/:id"}
    assert job["requestId"] == answer.headers["x-request-id"]


def test_async_route_answers_202_with_a_committed_job(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "shop/orders", requestType="async")
    answer = httpx.post(f"{api.base_url}/api/r/shop/orders", json={"n": 1})
    assert answer.status_code == 202
    job_id = answer.json()["jobId"]
    assert server.count("job", "id = $1", job_id) == 1
    assert wait_job(api, job_id)["result"] == {"n": 1}


def test_sync_sse_streams_logs_then_the_result(api: httpx.Client) -> None:
    route(api, "shop/hello", "f/r/hello", requestType="sync_sse")
    with httpx.stream("POST", f"{api.base_url}/api/r/shop/hello", json={"name": "sse"}, timeout=20) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    assert "data: saying hello" in text
    assert 'event: result\r\ndata: "hello sse"' in text.replace("\n", "\r\n").replace("\r\r", "\r")


def test_preprocessor_receives_the_event(api: httpx.Client) -> None:
    route(api, "hooks/:source/in", "f/r/pre", rawBody=True)
    answer = httpx.post(f"{api.base_url}/api/r/hooks/crm/in?x=1", json={"a": 1}, headers={"X-Custom": "v"})
    event = answer.json()
    assert answer.status_code == 200
    assert event["kind"] == "http" and event["body"] == {"a": 1} and event["raw_string"] == '{"a":1}'
    assert event["route"] == "hooks/:source/in" and event["path"] == "hooks/crm/in" and event["method"] == "POST"
    assert event["params"] == {"source": "crm"} and event["query"] == {"x": "1"} and event["headers"]["x-custom"] == "v"


def test_wrap_body_and_raw_body(api: httpx.Client) -> None:
    route(api, "shop/wrapped", wrapBody=True)
    assert httpx.post(f"{api.base_url}/api/r/shop/wrapped", json={"a": 1}).json() == {"body": {"a": 1}}
    route(api, "shop/raw", rawBody=True)
    answer = httpx.post(f"{api.base_url}/api/r/shop/raw", content=b"not json at all", headers={"content-type": "text/plain"})
    assert answer.json() == {"body": "not json at all", "raw_string": "not json at all"}
    form = httpx.post(f"{api.base_url}/api/r/shop/wrapped", data={"k": "v"})
    assert form.json() == {"body": {"k": "v"}}


def test_all_methods_and_a_failed_run(api: httpx.Client) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        route(api, "shop/items/:id", method=method)
    assert httpx.get(f"{api.base_url}/api/r/shop/items/7?q=x").json() == {"q": "x", "id": "7"}
    assert httpx.delete(f"{api.base_url}/api/r/shop/items/7").json() == {"id": "7"}
    assert httpx.patch(f"{api.base_url}/api/r/shop/items/7", json={"p": 1}).json() == {"p": 1, "id": "7"}
    route(api, "shop/broken", "f/r/fails")
    failed = httpx.post(f"{api.base_url}/api/r/shop/broken", json={})
    assert failed.status_code == 422 and failed.json()["error"]["details"]["status"] == "FAILED"


def test_bad_requests(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "strict/json")
    before = runs(server)
    malformed = httpx.post(f"{api.base_url}/api/r/strict/json", content=b'{"a": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "bad_request"
    big = httpx.post(f"{api.base_url}/api/r/strict/json", content=b"x" * (11 * 1024 * 1024),
                     headers={"content-type": "text/plain"})
    assert big.status_code == 413
    assert httpx.post(f"{api.base_url}/api/r/strict/nothing", json={}).status_code == 404
    wrong = httpx.get(f"{api.base_url}/api/r/strict/json")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert runs(server) == before


def test_route_without_runnable_answers_a_clear_error(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "later/thing", None)
    before = runs(server)
    answer = httpx.post(f"{api.base_url}/api/r/later/thing", json={})
    assert answer.status_code == 501 and "no script" in answer.json()["error"]["message"]
    assert runs(server) == before


def test_management_rules(server: FlowmillServer, api: httpx.Client) -> None:
    created = route(api, "rules/a")
    assert api.post("/api/v1/routes", json={"path": "rules/a", "method": "POST"}).status_code == 409
    route(api, "rules/p/:x")
    same_shape = api.post("/api/v1/routes", json={"path": "rules/p/:y", "method": "POST"})
    assert same_shape.status_code == 409
    for bad in ({"path": "../etc"}, {"path": "a b"}, {"path": "x", "method": "TRACE"}, {"path": "x", "requestType": "later"},
                {"path": "x", "auth": {"kind": "magic"}}, {"path": "x", "surprise": 1},
                {"path": "x", "runnable": {"kind": "app", "path": "f/x"}}):
        assert api.post("/api/v1/routes", json=bad).status_code == 400, bad
    editor = server.user("route-editor", "editor")
    with server.client(editor) as as_editor:
        assert as_editor.post("/api/v1/routes", json={"path": "rules/b"}).status_code == 403
        changed = as_editor.put(f"/api/v1/routes/{created['id']}", json={"method": "POST", "summary": "edited",
                                                                         "runnable": {"kind": "script", "path": "f/r/hello"}})
        assert changed.status_code == 200 and changed.json()["summary"] == "edited"
        moved = as_editor.put(f"/api/v1/routes/{created['id']}", json={"path": "rules/elsewhere"})
        assert moved.status_code == 400
    viewer = server.user("route-viewer", "viewer")
    with server.client(viewer) as as_viewer:
        assert as_viewer.put(f"/api/v1/routes/{created['id']}", json={"summary": "x"}).status_code == 403
        assert as_viewer.get(f"/api/v1/routes/{created['id']}").status_code == 200
    assert httpx.post(f"{api.base_url}/api/r/rules/a", json={"name": "x"}).json() == "hello x"
    assert api.delete(f"/api/v1/routes/{created['id']}").status_code == 204
    assert httpx.post(f"{api.base_url}/api/r/rules/a", json={}).status_code == 404


# -- authentication -----------------------------------------------------------------------------------


def test_github_signature(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "gh/push", requestType="async", auth={"kind": "hmac", "preset": "github", "secret": GITHUB_SECRET})
    url = f"{api.base_url}/api/r/gh/push"
    accepted = httpx.post(url, content=b"Hello, World!", headers={"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert accepted.status_code == 202
    assert wait_job(api, accepted.json()["jobId"])["args"] == {"body": "Hello, World!"}
    before = runs(server)
    changed = httpx.post(url, content=b"Hello, World?", headers={"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert changed.status_code == 401
    assert GITHUB_SECRET not in changed.text and "github" not in changed.text.lower()
    assert httpx.post(url, content=b"Hello, World!").status_code == 401
    assert runs(server) == before


def _stripe(secret: str, body: bytes, at: int) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def _slack(secret: str, body: bytes, at: int) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={mac}", "X-Slack-Request-Timestamp": str(at)}


def test_stripe_and_slack_signatures_and_their_tolerance(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "pay/stripe", requestType="async", auth={"kind": "hmac", "preset": "stripe", "secret": "whsec_1"})
    route(api, "chat/slack", requestType="async", auth={"kind": "hmac", "preset": "slack", "secret": "slk"})
    body, now = b'{"type":"charge.succeeded"}', int(time.time())
    stripe = f"{api.base_url}/api/r/pay/stripe"
    assert httpx.post(stripe, content=body, headers={"Stripe-Signature": _stripe("whsec_1", body, now)}).status_code == 202
    slack = f"{api.base_url}/api/r/chat/slack"
    assert httpx.post(slack, content=body, headers=_slack("slk", body, now)).status_code == 202
    before = runs(server)
    for stale in (now - 301, now + 400):
        assert httpx.post(stripe, content=body, headers={"Stripe-Signature": _stripe("whsec_1", body, stale)}).status_code == 401
        assert httpx.post(slack, content=body, headers=_slack("slk", body, stale)).status_code == 401
    assert httpx.post(stripe, content=body, headers={"Stripe-Signature": _stripe("other", body, now)}).status_code == 401
    assert runs(server) == before


def test_api_key_basic_jwt_and_custom(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "auth/key", auth={"kind": "api_key", "header": "X-API-Key", "key": "k-123"})
    route(api, "auth/basic", auth={"kind": "basic", "username": "u", "password": "p:w"})
    route(api, "auth/jwt", auth={"kind": "jwt"})
    route(api, "auth/custom", auth={"kind": "custom", "script": "f/auth/check"})
    base = f"{api.base_url}/api/r/auth"
    before = runs(server)
    assert httpx.post(f"{base}/key", json={}, headers={"X-API-Key": "k-124"}).status_code == 401
    refused = httpx.post(f"{base}/basic", json={}, auth=("u", "p:x"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert httpx.post(f"{base}/jwt", json={}).status_code == 401
    assert httpx.post(f"{base}/jwt", json={}, headers={"Authorization": "Bearer forged"}).status_code == 401
    assert httpx.post(f"{base}/custom", json={}).status_code == 401
    assert runs(server) == before
    assert httpx.post(f"{base}/key", json={"a": 1}, headers={"X-API-Key": "k-123"}).json() == {"a": 1}
    assert httpx.post(f"{base}/basic", json={"a": 2}, auth=("u", "p:w")).json() == {"a": 2}
    token = server.user("route-runner", "executor")  # running needs the executor role (a viewer: 403)
    answer = httpx.post(f"{base}/jwt", json={"a": 3}, headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"a": 3}
    assert api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()["createdBy"] == "route-runner"
    assert httpx.post(f"{base}/custom", json={"a": 4}, headers={"X-Let-Me-In": "please"}).json() == {"a": 4}


def test_secrets_are_never_shown_nor_stored_in_clear(server: FlowmillServer, api: httpx.Client) -> None:
    created = route(api, "secret/key", auth={"kind": "api_key", "header": "X-Key", "key": "very-secret-route-key-42"})
    assert "very-secret-route-key-42" not in json.dumps(created)
    assert "very-secret-route-key-42" not in api.get(f"/api/v1/routes/{created['id']}").text
    assert "very-secret-route-key-42" not in api.get("/api/v1/routes").text
    assert "very-secret-route-key-42" not in server.dump()
    kept = api.put(f"/api/v1/routes/{created['id']}", json={"method": "POST", "auth": {"kind": "api_key", "header": "X-Key"},
                                                            "runnable": {"kind": "script", "path": "f/r/echo"}})
    assert kept.status_code == 200, kept.text
    assert httpx.post(f"{api.base_url}/api/r/secret/key", json={}, headers={"X-Key": "very-secret-route-key-42"}).status_code == 200


# -- static files -----------------------------------------------------------------------------------------


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def test_static_website(api: httpx.Client) -> None:
    site = {"index.html": b"<h1>home</h1>", "css/site.css": b"body{}", "docs/index.html": b"<h1>docs</h1>",
            "app.js": b"let x = 1", "logo.png": b"\x89PNG\r\n"}
    uploaded = api.put("/api/v1/static/site", content=_zip(site))
    assert uploaded.status_code == 200 and uploaded.json()["files"] == 5
    created = api.post("/api/v1/routes", json={"path": "site", "method": "GET", "static": {"folder": "site", "website": True}})
    assert created.status_code == 201, created.text
    base = f"{api.base_url}/api/r/site"
    home = httpx.get(base)
    assert home.text == "<h1>home</h1>" and home.headers["content-type"].startswith("text/html")
    assert httpx.get(base + "/").text == "<h1>home</h1>"
    assert httpx.get(base + "/docs/").text == "<h1>docs</h1>" and httpx.get(base + "/docs").text == "<h1>docs</h1>"
    css = httpx.get(base + "/css/site.css")
    assert css.headers["content-type"].startswith("text/css") and "max-age" in css.headers["cache-control"]
    assert httpx.get(base + "/logo.png").headers["content-type"] == "image/png"
    assert httpx.get(base + "/css/site.css", headers={"If-None-Match": css.headers["etag"]}).status_code == 304
    assert httpx.get(base + "/missing.txt").status_code == 404
    raw = httpx.Client(base_url=str(api.base_url))
    for attack in ("/api/r/site/../../etc/passwd", "/api/r/site/%2e%2e/%2e%2e/etc/passwd", "/api/r/site/..%2f..%2fetc%2fpasswd",
                   "/api/r/site/%252e%252e/etc/passwd", "/api/r/site/css/..%5c..%5cindex.html"):
        answer = raw.send(raw.build_request("GET", httpx.URL(str(api.base_url) + attack)))
        assert answer.status_code in (400, 404), (attack, answer.status_code)
        assert b"root:" not in answer.content


def test_static_archives_that_escape_are_refused(api: httpx.Client) -> None:
    assert api.put("/api/v1/static/evil", content=_zip({"../../outside.txt": b"x"})).status_code == 400
    assert api.put("/api/v1/static/evil", content=b"not an archive").status_code == 400
    assert api.put("/api/v1/static/a/../../b", content=_zip({"a": b"x"})).status_code in (400, 404, 405)


# -- the workspace prefix ----------------------------------------------------------------------------------


def test_workspace_prefix_mode(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    admin = server.admin_token()
    with server.client(admin) as api:
        assert api.post("/api/v1/workspaces", json={"id": "other", "name": "Other"}).status_code == 201
        for prefix in ("/api/v1", "/api/v1/w/other"):
            api.post(f"{prefix}/scripts", json={"path": "f/x/e", "content": "def main(**a):\n    return a\n"})
        assert api.post("/api/v1/routes", json={"path": "same", "runnable": {"kind": "script", "path": "f/x/e"}}).status_code == 201
        # Without a prefix, paths are unique across the instance.
        assert api.post("/api/v1/w/other/routes", json={"path": "same"}).status_code == 409
        assert api.put("/api/v1/settings", json={"routeWorkspacePrefix": True}).status_code == 200
        assert api.post("/api/v1/w/other/routes", json={"path": "same", "runnable": {"kind": "script", "path": "f/x/e"}}).status_code == 201
        assert httpx.post(f"{server.url}/api/r/main/same", json={"w": "main"}).status_code == 200
        assert httpx.post(f"{server.url}/api/r/other/same", json={"w": "other"}).status_code == 200
        assert httpx.post(f"{server.url}/api/r/same", json={}).status_code == 404
        # Back to one namespace: the two would collide.
        assert api.put("/api/v1/settings", json={"routeWorkspacePrefix": False}).status_code == 409
        assert api.get("/api/v1/settings").json()["routeWorkspacePrefix"] is True
    user = server.user("not-instance-admin", "admin")
    with server.client(user) as api:
        assert api.put("/api/v1/settings", json={"routeWorkspacePrefix": False}).status_code == 403


# -- OpenAPI --------------------------------------------------------------------------------------------


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Pets", "version": "1"},
    "components": {
        "schemas": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "paths": {
        "/pets/{id}": {"get": {"summary": "Get a pet", "security": [{"bearer": []}],
                               "responses": {"200": {"description": "ok", "content": {"application/json": {
                                   "schema": {"$ref": "#/components/schemas/Pet"}}}}}}},
        "/pets": {"post": {"summary": "x" * 300, "responses": {"201": {"description": "made"}}}},
    },
}


def test_openapi_import_preview_save_and_export(api: httpx.Client) -> None:
    preview = api.post("/api/v1/routes/openapi/import", json={"spec": yaml.safe_dump(SPEC), "folder": "pets"})
    assert preview.status_code == 200, preview.text
    routes = preview.json()["routes"]
    assert preview.json()["saved"] is False and len(routes) == 2
    long = next(r for r in routes if r["method"] == "POST")
    assert len(long["path"].split("/", 1)[1]) == 255
    assert next(r for r in routes if r["method"] == "GET")["auth"] == {"kind": "jwt"}
    assert api.get("/api/v1/routes", params={"pathPrefix": "pets/"}).json() == []
    saved = api.post("/api/v1/routes/openapi/import?save=true", json={"spec": json.dumps(SPEC), "folder": "pets"})
    assert saved.status_code == 200 and saved.json()["saved"] is True
    assert len(api.get("/api/v1/routes", params={"pathPrefix": "pets/"}).json()) == 2
    upload = api.post("/api/v1/routes/openapi/import", files={"file": ("spec.yaml", yaml.safe_dump(SPEC))},
                      data={"folder": "pets2"})
    assert upload.status_code == 200 and len(upload.json()["routes"]) == 2

    external = {**SPEC, "paths": {"/x": {"get": {"responses": {"200": {"$ref": "other.yaml#/Ok"}}}}}}
    refused = api.post("/api/v1/routes/openapi/import", json={"spec": json.dumps(external), "folder": "ext"})
    assert refused.status_code == 422 and "other.yaml#/Ok" in refused.json()["error"]["message"]
    assert api.post("/api/v1/routes/openapi/import", json={"spec": ": : not yaml [", "folder": "x"}).status_code == 422

    from openapi_spec_validator import validate

    for fmt in ("json", "yaml"):
        exported = api.post("/api/v1/routes/openapi/export", json={"format": fmt, "filters": {"pathPrefix": "pets/"}})
        assert exported.status_code == 200
        document = json.loads(exported.text) if fmt == "json" else yaml.safe_load(exported.text)
        validate(document)
        assert document["openapi"].startswith("3.1") and document["info"] == {"title": "Flowmill API", "version": "1.0.0"}
        assert any("{id}" in path for path in document["paths"])
    curl = api.post("/api/v1/routes/openapi/export/curl", json={"format": "json"}).json()["command"]
    assert curl.startswith("curl") and "/api/v1/routes/openapi/export" in curl


# -- metrics -------------------------------------------------------------------------------------------------


def test_metrics_count_requests_and_runs_by_trigger(api: httpx.Client) -> None:
    route(api, "count/me")
    httpx.post(f"{api.base_url}/api/r/count/me", json={})
    text = api.get("/metrics").text
    assert 'flowmill_runs_started_total{trigger="route"}' in text
    assert 'flowmill_trigger_requests_total{outcome="accepted",trigger="route"}' in text
    assert 'flowmill_trigger_requests_total{outcome="refused",trigger="route"}' in text
    assert base64  # (imported for the basic-auth helpers of other modules)


def test_a_stranger_is_refused_before_the_body_is_read(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "strict/keyed", auth={"kind": "api_key", "header": "X-API-Key", "key": "k"})
    answer = httpx.post(f"{api.base_url}/api/r/strict/keyed", content=b"{broken", headers={"content-type": "application/json"})
    assert answer.status_code == 401
