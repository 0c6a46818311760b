"""The audit log, health, readiness, metrics, OpenAPI and request ids."""

from __future__ import annotations

import time

from tests.support import FlowmillServer


def entries(server: FlowmillServer, token: str, **params: object) -> list[dict[str, object]]:
    with server.client(token) as client:
        response = client.get("/api/v1/audit", params=params)
    response.raise_for_status()
    return response.json()["items"]


def test_changes_and_refusals_are_audited(server: FlowmillServer) -> None:
    admin = server.admin_token()
    viewer = server.user("auditee", "viewer")
    with server.client(admin) as client:
        client.put("/api/v1/kv/audited/k", json=1).raise_for_status()
        client.delete("/api/v1/kv/audited/k").raise_for_status()
    with server.client(viewer) as client:
        assert client.put("/api/v1/kv/audited/k", json=2).status_code == 403
        assert client.get("/api/v1/audit").status_code == 403
    time.sleep(0.3)  # a refusal's entry is written just after its answer
    puts = entries(server, admin, action="kv.put")
    assert {"actor": "admin", "outcome": "success", "workspace": "main", "target": "kv:audited/k"}.items() <= puts[-1].items()
    denied = entries(server, admin, outcome="denied", actor="auditee")
    assert denied and denied[0]["action"] == "kv.put" and denied[0]["status"] == 403
    assert entries(server, admin, action="kv.delete")[0]["outcome"] == "success"
    assert all(e["actor"] == "auditee" for e in entries(server, admin, actor="auditee"))


def test_audit_pages_with_a_cursor(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        for i in range(7):
            client.put(f"/api/v1/kv/paged/k{i}", json=i).raise_for_status()
        seen, cursor = [], None
        while True:
            params = {"limit": 3, "action": "kv.put", **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/audit", params=params).json()
            seen += [e["id"] for e in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 7


def test_health_readiness_metrics_openapi_and_request_ids(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] in ("sqlite", "postgres")
        client.put("/api/v1/kv/metered/k", json=1).raise_for_status()
        client.get("/api/v1/kv/metered/nope")
        metrics = client.get("/metrics").text
        assert 'flowmill_http_requests_total{method="PUT",route="/api/v1/kv/{namespace}/{key}",status="200"}' in metrics
        assert 'flowmill_http_requests_total{method="GET",route="/api/v1/kv/{namespace}/{key}",status="404"}' in metrics
        assert "flowmill_http_request_duration_seconds_bucket" in metrics and "flowmill_db_pool" in metrics
        spec = client.get("/api/v1/openapi.json").json()
        assert spec["openapi"].startswith("3.")
        for path in ("/auth/register", "/auth/login", "/api/v1/kv/{namespace}/{key}", "/api/v1/credentials",
                     "/api/v1/audit", "/api/v1/tokens", "/api/v1/workspaces", "/api/v1/w/{workspace}/kv/{namespace}/{key}"):
            assert path in spec["paths"], path
        for response in (client.get("/healthz"), client.get("/api/v1/kv/metered/k"), client.get("/nope"),
                         server.client().get("/api/v1/kv/metered/k")):
            assert response.headers.get("x-request-id"), response.url
        assert client.get("/healthz", headers={"X-Request-Id": "given-id-1"}).headers["x-request-id"] == "given-id-1"
        unknown = client.get("/no/such/route")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        wrong = client.patch("/api/v1/kv/metered/k")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
