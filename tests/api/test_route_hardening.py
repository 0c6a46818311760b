"""What an attacker tries on routes, webhooks and static sites: secrets left in stored events,
a route path taken over from another workspace, a static site's script on the API's origin, an
OpenAPI import that makes the server fetch from its own network."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}
# A preprocessor returns the event it got: the run's result shows what a script is handed.
ECHO_EVENT = "def preprocessor(event):\n    return {'event': event}\n\ndef main(event: dict):\n    return event\n"


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> Iterator[httpx.Client]:
    with server.client(server.admin_token()) as client:
        assert client.post("/api/v1/scripts", json={"path": "f/h/event", "content": ECHO_EVENT}).status_code in (200, 201)
        assert client.post("/api/v1/scripts", json={"path": "f/h/echo", "content": "def main(**a):\n    return a\n"}).status_code in (200, 201)
        yield client


def _route(api: httpx.Client, path: str, auth: dict[str, object], method: str = "POST", script: str = "f/h/event") -> None:
    answer = api.post("/api/v1/routes", json={"path": path, "method": method, "requestType": "sync", "auth": auth,
                                               "runnable": {"kind": "script", "path": script}})
    assert answer.status_code == 201, answer.text


def _stored(server: FlowmillServer) -> str:
    """Everything the database holds, as text: a secret must not be anywhere in it."""
    return server.dump()


# -- 7. secrets stay out of stored events ---------------------------------------------------------------


def test_api_key_header_is_not_in_the_event(server: FlowmillServer, api: httpx.Client) -> None:
    _route(api, "h/keyed", {"kind": "api_key", "header": "X-Api-Key", "key": "k-1a2b3c4d5e6f"})
    answer = httpx.post(f"{server.url}/api/r/h/keyed", json={"a": 1},
                        headers={"X-Api-Key": "k-1a2b3c4d5e6f", "Authorization": "Bearer other-credential-77",
                                 "Cookie": "session=cookie-secret-88", "X-Other": "kept"})
    assert answer.status_code == 200, answer.text
    headers = answer.json()["headers"]
    assert headers.get("x-other") == "kept"
    for name in ("x-api-key", "authorization", "cookie"):
        assert name not in headers
    stored = _stored(server)
    for secret in ("k-1a2b3c4d5e6f", "other-credential-77", "cookie-secret-88"):
        assert secret not in stored


def test_signature_headers_are_not_in_the_event(server: FlowmillServer, api: httpx.Client) -> None:
    secret = "gh-secret-5566"
    _route(api, "h/github", {"kind": "hmac", "preset": "github", "secret": secret})
    _route(api, "h/generic", {"kind": "hmac", "preset": "generic", "secret": secret, "header": "X-My-Sig"})
    body = b'{"action": "opened"}'
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = httpx.post(f"{server.url}/api/r/h/github", content=body,
                        headers={"content-type": "application/json", "X-Hub-Signature-256": f"sha256={digest}",
                                 "X-Hub-Signature": "sha1=legacy-signature"})
    assert github.status_code == 200, github.text
    assert not {"x-hub-signature-256", "x-hub-signature"} & set(github.json()["headers"])
    generic = httpx.post(f"{server.url}/api/r/h/generic", content=body,
                         headers={"content-type": "application/json", "X-My-Sig": digest})
    assert generic.status_code == 200, generic.text
    assert "x-my-sig" not in generic.json()["headers"]
    assert digest not in _stored(server)


def test_webhook_secret_is_not_in_the_event(server: FlowmillServer, api: httpx.Client) -> None:
    hook = api.post("/api/v1/triggers", json={"kind": "webhook", "key": "hardened", "secret": "hook-secret-9911",
                                              "runnable": {"kind": "script", "path": "f/h/event"}})
    assert hook.status_code == 201, hook.text
    by_header = httpx.post(f"{server.url}/api/v1/webhook/hardened?x=1", json={"n": 1},
                           headers={"X-Webhook-Secret": "hook-secret-9911"})
    # The secret travels only in its header: in the URL alone it is a missing secret; sent in
    # both, the URL's copy is kept out of the event.
    by_query = httpx.post(f"{server.url}/api/v1/webhook/hardened?secret=hook-secret-9911&y=2", json={"n": 2})
    assert by_query.status_code == 401, by_query.text
    both = httpx.post(f"{server.url}/api/v1/webhook/hardened?secret=hook-secret-9911&y=2", json={"n": 2},
                      headers={"X-Webhook-Secret": "hook-secret-9911"})
    for answer in (by_header, both):
        assert answer.status_code == 202, answer.text
        job = wait_for(lambda: (j := api.get(f"/api/v1/jobs/{answer.json()['jobId']}").json())["status"] in FINAL and j, 20)
        assert job["status"] == "SUCCESS", job
        event = job["result"]
        assert "x-webhook-secret" not in event["headers"] and "secret" not in event["query"]
    assert "hook-secret-9911" not in json.dumps(api.get("/api/v1/jobs?trigger=webhook").json())
    assert "hook-secret-9911" not in str(server.query("SELECT args, event, result, error FROM job"))


def test_custom_auth_sees_the_credentials_the_run_does_not(server: FlowmillServer, api: httpx.Client) -> None:
    check = "def main(event: dict):\n    return event['headers'].get('authorization') == 'Token let-me-in-42'\n"
    assert api.post("/api/v1/scripts", json={"path": "f/h/check", "content": check}).status_code in (200, 201)
    _route(api, "h/custom", {"kind": "custom", "script": "f/h/check"})
    refused = httpx.post(f"{server.url}/api/r/h/custom", json={}, headers={"Authorization": "Token wrong"})
    assert refused.status_code == 401
    allowed = httpx.post(f"{server.url}/api/r/h/custom", json={}, headers={"Authorization": "Token let-me-in-42"})
    assert allowed.status_code == 200, allowed.text
    assert "authorization" not in allowed.json()["headers"]
    assert "let-me-in-42" not in str(server.query("SELECT args, event, result, error FROM job"))


# -- 8. a route path belongs to one workspace -------------------------------------------------------------


def test_route_paths_cannot_be_taken_over_across_workspaces(server: FlowmillServer, api: httpx.Client) -> None:
    assert api.post("/api/v1/workspaces", json={"id": "rival", "name": "Rival"}).status_code == 201
    _route(api, "pay/users/:id", {"kind": "none"}, script="f/h/echo")
    _route(api, "pay/plain", {"kind": "none"}, method="GET", script="f/h/echo")
    rival = "/api/v1/w/rival/routes"
    for path, method in (
        ("pay/users/:id", "POST"),  # the same path
        ("pay/users/:id", "GET"),  # the same path, another method
        ("pay/users/:uid", "DELETE"),  # the same shape
        ("pay/users/admin", "POST"),  # a literal the other workspace's pattern serves
        ("pay/:what/:id", "POST"),  # a pattern that serves the other workspace's paths
        ("pay/plain", "POST"),  # another method on a literal path
        (":a/:b", "PUT"),
    ):
        answer = api.post(rival, json={"path": path, "method": method, "runnable": {"kind": "script", "path": "f/x"}})
        assert answer.status_code == 409, (path, method, answer.text)
        assert answer.json()["error"]["code"] == "conflict"
    # Nor by a static site whose folder route lies above them.
    static = api.post(rival, json={"path": "pay", "method": "GET", "static": {"folder": "site"}})
    assert static.status_code == 409, static.text
    # Paths of their own are theirs.
    assert api.post(rival, json={"path": "rival/users/:id", "method": "POST",
                                 "runnable": {"kind": "script", "path": "f/x"}}).status_code == 201
    # Within one workspace, a literal beside a pattern is fine (the literal is served first).
    _route(api, "pay/users/me", {"kind": "none"}, script="f/h/echo")
    assert httpx.post(f"{server.url}/api/r/pay/users/7", json={}).json() == {"id": "7"}


# -- 10. static sites are sandboxed; imports do not reach the server's network ------------------------------


def test_static_site_is_sandboxed(server: FlowmillServer, api: httpx.Client) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("index.html", "<script>fetch('/api/v1/credentials')</script>")
        bundle.writestr("app.js", "console.log(1)")
    assert api.put("/api/v1/static/boxed", content=archive.getvalue()).status_code == 200
    assert api.post("/api/v1/routes", json={"path": "boxed", "method": "GET",
                                            "static": {"folder": "boxed", "website": True}}).status_code == 201
    for path, kind in (("boxed/", "text/html"), ("boxed/index.html", "text/html"), ("boxed/app.js", None)):
        answer = httpx.get(f"{server.url}/api/r/{path}")
        assert answer.status_code == 200, (path, answer.status_code)
        content_type = answer.headers["content-type"]
        assert content_type.count("charset") == 1, content_type
        if kind:
            assert content_type.startswith(kind)
        policy = answer.headers["content-security-policy"]
        assert policy.startswith("sandbox") and "allow-same-origin" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"


class _Spec(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/spec.json")
            self.end_headers()
            return
        body = json.dumps({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
                           "paths": {"/pets": {"get": {"summary": "pets"}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def spec_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Spec)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_openapi_import_refuses_the_servers_own_network(server: FlowmillServer, api: httpx.Client, spec_server: str) -> None:
    port = spec_server.rsplit(":", 1)[1]
    for url in (f"{spec_server}/spec.json", f"http://localhost:{port}/spec.json", f"http://[::1]:{port}/x",
                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/spec", "http://192.168.1.1/spec",
                f"http://0.0.0.0:{port}/spec.json", f"http://[::ffff:127.0.0.1]:{port}/spec.json",
                f"http://127.1:{port}/spec.json"):
        answer = api.post("/api/v1/routes/openapi/import", json={"url": url, "folder": "imp"})
        assert answer.status_code == 400, (url, answer.status_code, answer.text)
        assert "private" in answer.json()["error"]["message"]
    # An instance admin may allow it (an API on the same machine); redirects are followed, and checked.
    assert api.put("/api/v1/settings", json={"allowPrivateUrls": True}).json()["allowPrivateUrls"] is True
    try:
        for url in (f"{spec_server}/spec.json", f"{spec_server}/redirect"):
            answer = api.post("/api/v1/routes/openapi/import", json={"url": url, "folder": "imp"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["routes"][0]["method"] == "GET"
    finally:
        assert api.put("/api/v1/settings", json={"allowPrivateUrls": False}).status_code == 200
    assert api.get("/api/v1/settings").json() == {"routeWorkspacePrefix": False, "allowPrivateUrls": False,
                                                 "runnerTick": False}


def test_only_an_instance_admin_allows_private_urls(server: FlowmillServer, api: httpx.Client) -> None:
    editor = server.user("hard-editor", "admin")  # a workspace admin, not the instance admin
    with server.client(editor) as client:
        assert client.put("/api/v1/settings", json={"allowPrivateUrls": True}).status_code == 403
        assert client.put("/api/v1/settings", json={}).status_code == 403
    assert api.get("/api/v1/settings").json()["allowPrivateUrls"] is False
