"""The audit log, health, readiness, metrics, OpenAPI and request ids."""

from __future__ import annotations

import re
import time

import httpx

from tests.support import FlowmillServer, wait_for


def entries(server: FlowmillServer, token: str, workspace: str = "main", **params: object) -> list[dict[str, object]]:
    prefix = "/api/v1" if workspace == "main" else f"/api/v1/w/{workspace}"
    with server.client(token) as client:
        response = client.get(f"{prefix}/audit", params={"limit": 200, **params})
    response.raise_for_status()
    return response.json()["items"]


def newest(server: FlowmillServer, token: str, workspace: str = "main", target: str | None = None,
           **params: object) -> dict[str, object]:
    """The newest entry matching the filters (and `target`), waiting for it: a refusal's entry
    is written just after its answer."""

    def probe() -> dict[str, object] | None:
        return next((e for e in entries(server, token, workspace, **params) if target in (None, e["target"])), None)

    return wait_for(probe, what=f"an audit entry {params} {target or ''}")


def metric(text: str, line: str) -> float:
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_every_change_is_audited_with_actor_action_workspace_and_outcome(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        started = int(time.time() * 1000)
        steps = [
            client.post("/auth/register", json={"username": "audit-user", "password": "password-1234"}),
            client.post("/api/v1/tokens", json={"label": "audited"}),
            client.post("/api/v1/workspaces", json={"id": "audited-ws", "name": "Audited"}),
            client.put("/api/v1/workspaces/audited-ws/members/audit-user", json={"role": "editor"}),
            client.delete("/api/v1/workspaces/audited-ws/members/audit-user"),
            client.post("/api/v1/credentials", json={"name": "AUDITED", "value": "v"}),
            client.put("/api/v1/kv/audited/k", json=1),
            client.delete("/api/v1/kv/audited/k"),
            client.put("/api/v1/w/audited-ws/kv/elsewhere/k", json=1),
        ]
        assert all(r.status_code < 300 for r in steps), [r.text for r in steps]
        token_id, credential_id = steps[1].json()["id"], steps[5].json()["id"]
        steps += [
            client.delete(f"/api/v1/tokens/{token_id}"),
            client.put(f"/api/v1/credentials/{credential_id}", json={"value": "w"}),
            client.delete(f"/api/v1/credentials/{credential_id}"),
        ]
        assert all(r.status_code < 300 for r in steps), [r.text for r in steps]
    expected = {  # action -> target, in workspace main
        "user.register": "user:audit-user",
        "token.create": f"token:{token_id}",
        "token.revoke": f"token:{token_id}",
        "workspace.create": "workspace:audited-ws",
        "member.set": "workspace:audited-ws/member:audit-user",
        "member.remove": "workspace:audited-ws/member:audit-user",
        "credential.create": "credential:AUDITED",
        "credential.update": "credential:AUDITED",
        "credential.delete": "credential:AUDITED",
        "kv.put": "kv:audited/k",
        "kv.delete": "kv:audited/k",
    }
    found = {e["action"]: e for e in entries(server, admin, since=started)}
    for action, target in expected.items():
        assert action in found, action
        entry = found[action]
        assert (entry["actor"], entry["workspace"], entry["outcome"], entry["target"]) == ("admin", "main", "success", target), entry
        assert started <= entry["at"] <= time.time() * 1000 + 1000 and entry["status"] < 300 and entry["requestId"]
    # a change in another workspace is in that workspace's log, not main's
    elsewhere = newest(server, admin, "audited-ws", action="kv.put")
    assert (elsewhere["workspace"], elsewhere["target"], elsewhere["actor"]) == ("audited-ws", "kv:elsewhere/k", "admin")
    assert "kv:elsewhere/k" not in [e["target"] for e in entries(server, admin, since=started)]


def test_refused_and_failed_writes_are_audited(server: FlowmillServer) -> None:
    admin = server.admin_token()
    viewer = server.user("auditee", "viewer")
    with server.client(viewer) as client:
        refused = client.put("/api/v1/kv/audited/denied", json=2)
        assert refused.status_code == 403
        assert client.get("/api/v1/audit").status_code == 403
    denied = newest(server, admin, outcome="denied", actor="auditee")
    assert (denied["action"], denied["status"], denied["workspace"], denied["target"]) == ("kv.put", 403, "main", "/api/v1/kv/audited/denied")
    assert denied["requestId"] == refused.headers["x-request-id"]
    with server.client() as anonymous:
        assert anonymous.put("/api/v1/kv/audited/anonymous", json=1).status_code == 401
    nobody = newest(server, admin, outcome="denied", action="kv.put", target="/api/v1/kv/audited/anonymous")
    assert nobody["actor"] is None and nobody["status"] == 401 and nobody["workspace"] == "main"
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "TWICE", "value": "x"}).raise_for_status()
        assert client.post("/api/v1/credentials", json={"name": "TWICE", "value": "x"}).status_code == 409
    rejected = newest(server, admin, outcome="rejected", action="credential.create")
    assert rejected["status"] == 409 and rejected["actor"] == "admin"


def test_filters_and_cursor_pagination(server: FlowmillServer) -> None:
    admin = server.admin_token()
    editor = server.user("audit-editor", "editor")
    started = int(time.time() * 1000)
    with server.client(admin) as client:
        for i in range(7):
            client.put(f"/api/v1/kv/paged/k{i}", json=i).raise_for_status()
    with server.client(editor) as client:
        for i in range(3):
            client.put(f"/api/v1/kv/paged/e{i}", json=i).raise_for_status()
        client.delete("/api/v1/kv/paged/e0").raise_for_status()
    assert {e["actor"] for e in entries(server, admin, actor="audit-editor")} == {"audit-editor"}
    assert len(entries(server, admin, actor="audit-editor", action="kv.put")) == 3
    assert [e["target"] for e in entries(server, admin, actor="audit-editor", action="kv.delete")] == ["kv:paged/e0"]
    assert {e["outcome"] for e in entries(server, admin, outcome="success", since=started)} == {"success"}
    assert entries(server, admin, actor="nobody-like-this") == []
    mine = entries(server, admin, since=started, actor="admin", action="kv.put")
    assert len(mine) == 7 and all(e["at"] >= started for e in mine)
    assert entries(server, admin, until=started, actor="audit-editor") == []
    seen: list[int] = []
    with server.client(admin) as client:
        cursor = None
        for _ in range(20):
            params = {"limit": 3, "action": "kv.put", "since": started, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/audit", params=params).json()
            assert len(page["items"]) <= 3
            seen += [e["id"] for e in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
    assert len(seen) == 10 and len(set(seen)) == 10 and seen == sorted(seen, reverse=True)  # newest first, each once
    assert seen == [e["id"] for e in entries(server, admin, action="kv.put", since=started)]


def test_only_admins_read_the_audit(server: FlowmillServer) -> None:
    for role in ("viewer", "executor", "editor"):
        token = server.user(f"audit-{role}-reader", role)
        with server.client(token) as client:
            response = client.get("/api/v1/audit")
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", role
    with server.client() as client:
        assert client.get("/api/v1/audit").status_code == 401
    assert entries(server, server.admin_token())


def test_health_readiness_metrics_and_openapi(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client() as anonymous:
        health = anonymous.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == server.backend
    with server.client(admin) as client:
        client.put("/api/v1/kv/metered/k", json=1).raise_for_status()
        client.get("/api/v1/kv/metered/nope")
        client.put("/api/v1/w/main/kv/metered/k", json=1).raise_for_status()
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert metric(text, 'flowmill_http_requests_total{method="PUT",route="/api/v1/kv/{namespace}/{key}",status="200"}') >= 1
        assert metric(text, 'flowmill_http_requests_total{method="GET",route="/api/v1/kv/{namespace}/{key}",status="404"}') >= 1
        assert metric(text, 'flowmill_http_requests_total{method="PUT",route="/api/v1/w/{workspace}/kv/{namespace}/{key}",status="200"}') >= 1
        assert "/kv/metered/" not in text  # labelled by template, not by the concrete path
        assert metric(text, 'flowmill_http_request_duration_seconds_bucket{method="PUT",route="/api/v1/kv/{namespace}/{key}",le="+Inf"}') >= 1
        assert "# TYPE flowmill_http_request_duration_seconds histogram" in text
        assert re.search(rf'^flowmill_db_pool{{backend="{server.backend}",measure="\w+"}} \d', text, re.MULTILINE), text
        spec_response = client.get("/api/v1/openapi.json")
        assert spec_response.status_code == 200
        spec = spec_response.json()
    assert re.match(r"^3\.\d+\.\d+$", spec["openapi"]) and spec["info"]["title"]
    routes = {
        "/auth/register": "post", "/auth/login": "post",
        "/api/v1/tokens": "post", "/api/v1/tokens/{token_id}": "delete",
        "/api/v1/workspaces": "post", "/api/v1/workspaces/{workspace_id}/members/{username}": "put",
        "/api/v1/credentials": "post", "/api/v1/credentials/{credential_id}": "put",
        "/api/v1/kv/{namespace}/{key}": "put", "/api/v1/kv/{namespace}": "get", "/api/v1/audit": "get",
        "/api/v1/w/{workspace}/kv/{namespace}/{key}": "delete", "/api/v1/w/{workspace}/kv/{namespace}": "get",
        "/api/v1/w/{workspace}/credentials": "get", "/api/v1/w/{workspace}/credentials/{credential_id}": "get",
        "/api/v1/w/{workspace}/audit": "get", "/healthz": "get", "/readyz": "get", "/metrics": "get",
    }
    missing = {path: method for path, method in routes.items() if method not in spec["paths"].get(path, {})}
    assert missing == {}
    assert {"get", "put", "delete"} <= set(spec["paths"]["/api/v1/kv/{namespace}/{key}"])
    assert {"get", "put", "delete"} <= set(spec["paths"]["/api/v1/credentials/{credential_id}"])


def test_a_request_is_counted_once_in_the_metrics(server: FlowmillServer) -> None:
    """One request, one count: whether it succeeds or its handler answers with an error."""
    admin = server.admin_token()
    route = "/api/v1/kv/{namespace}/{key}"
    lines = {
        "success": f'flowmill_http_requests_total{{method="GET",route="{route}",status="200"}}',
        "handler error (404)": f'flowmill_http_requests_total{{method="GET",route="{route}",status="404"}}',
        "handler error (400)": f'flowmill_http_requests_total{{method="PUT",route="{route}",status="400"}}',
        "refused (403)": f'flowmill_http_requests_total{{method="PUT",route="{route}",status="403"}}',
        "latency of GETs": f'flowmill_http_request_duration_seconds_count{{method="GET",route="{route}"}}',
    }
    viewer = server.user("metered-viewer", "viewer")
    with server.client(admin) as client, server.client(viewer) as as_viewer:
        client.put("/api/v1/kv/counted/here", json=1).raise_for_status()
        before = client.get("/metrics").text
        client.get("/api/v1/kv/counted/here").raise_for_status()
        assert client.get("/api/v1/kv/counted/absent").status_code == 404
        assert client.put("/api/v1/kv/counted/bad", content=b"{bad").status_code == 400
        assert as_viewer.put("/api/v1/kv/counted/refused", json=1).status_code == 403
        after = client.get("/metrics").text
    increase = {what: metric(after, line) - metric(before, line) for what, line in lines.items()}
    assert increase == {"success": 1, "handler error (404)": 1, "handler error (400)": 1, "refused (403)": 1, "latency of GETs": 2}


def test_every_response_has_one_request_id(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client, server.client() as anonymous:
        answers = {
            "health": client.get("/healthz"),
            "ok read": client.get("/api/v1/kv/ids"),
            "ok write": client.put("/api/v1/kv/ids/k", json=1),
            "no token": anonymous.get("/api/v1/kv/ids/k"),
            "missing key": client.get("/api/v1/kv/ids/nope"),
            "malformed JSON": client.put("/api/v1/kv/ids/k", content=b"{bad"),
            "too large": client.put("/api/v1/kv/ids/k", content=b'"' + b"x" * (1024 * 1024 + 1) + b'"'),
            "validation": client.post("/api/v1/tokens", json={"label": 5}),
            "conflict": client.post("/api/v1/workspaces", json={"id": "main", "name": "again"}),
            "unknown route": client.get("/no/such/route"),
            "wrong method": client.patch("/api/v1/kv/ids/k"),
            "metrics": client.get("/metrics"),
            "openapi": client.get("/api/v1/openapi.json"),
        }
        given = {
            "ok": client.get("/healthz", headers={"X-Request-Id": "given-id-1"}),
            "missing key": client.get("/api/v1/kv/ids/nope", headers={"X-Request-Id": "given-id-2"}),
        }
    assert answers["unknown route"].status_code == 404 and answers["unknown route"].json()["error"]["code"] == "not_found"
    assert answers["wrong method"].status_code == 405 and answers["wrong method"].json()["error"]["code"] == "method_not_allowed"
    assert answers["conflict"].status_code == 409 and answers["conflict"].json()["error"]["code"] == "conflict"
    assert answers["too large"].status_code == 413
    ids = {what: r.headers.get_list("x-request-id") for what, r in answers.items()}
    assert all(found and found[0] for found in ids.values()), ids
    firsts = [found[0] for found in ids.values()]
    assert len(set(firsts)) == len(firsts)  # one id per request
    assert given["ok"].headers.get_list("x-request-id")[0] == "given-id-1"
    assert given["missing key"].headers.get_list("x-request-id")[0] == "given-id-2"
    # and each response carries its id once, not repeated
    assert {what: len(found) for what, found in ids.items()} == {what: 1 for what in answers}
    assert given["missing key"].headers.get_list("x-request-id") == ["given-id-2"]


def test_errors_are_json_envelopes(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        for response in (client.get("/nope"), client.put("/api/v1/kv/x/y", content=b"{"), client.delete("/api/v1/tokens/none")):
            assert response.headers["content-type"].startswith("application/json")
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
            assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(httpx.get(server.url + "/healthz").json(), dict)
