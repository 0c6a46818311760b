"""The key-value store: values, listing, limits and bad input."""

from __future__ import annotations

import json

import pytest

from tests.support import FlowmillServer

VALUES = [{"a": [1, 2, {"b": None}]}, [1, "two", 3.5], "text", 42, 4.25, True, False, None, {"unicode": "héllo ✓"}]


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    return server.admin_token()


@pytest.mark.parametrize("value", VALUES, ids=[json.dumps(v)[:20] for v in VALUES])
def test_every_json_value_round_trips(server: FlowmillServer, admin: str, value: object) -> None:
    with server.client(admin) as client:
        put = client.put("/api/v1/kv/values/key", content=json.dumps(value))
        assert put.status_code == 200, put.text
        got = client.get("/api/v1/kv/values/key").json()
        assert got["value"] == value
        assert got["namespace"] == "values" and got["key"] == "key" and got["updatedAt"] == put.json()["updatedAt"]


def test_delete_then_404(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.put("/api/v1/kv/del/gone", json=1).raise_for_status()
        assert client.delete("/api/v1/kv/del/gone").status_code == 204
        assert client.get("/api/v1/kv/del/gone").status_code == 404
        assert client.delete("/api/v1/kv/del/gone").status_code == 404


def test_listing_with_prefix_and_cursor(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        for i in range(25):
            client.put(f"/api/v1/kv/list/item-{i:02d}", json=i).raise_for_status()
        client.put("/api/v1/kv/list/other", json=0).raise_for_status()
        seen, cursor, pages = [], None, 0
        while True:
            page = client.get("/api/v1/kv/list", params={"prefix": "item-", "limit": 10, **({"cursor": cursor} if cursor else {})}).json()
            seen += [item["key"] for item in page["items"]]
            pages += 1
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [f"item-{i:02d}" for i in range(25)]
        assert len(client.get("/api/v1/kv/list").json()["items"]) == 26
        assert client.get("/api/v1/kv/list", params={"limit": 0}).status_code == 400


def test_a_value_over_the_limit_is_413_and_nothing_is_stored(server: FlowmillServer, admin: str) -> None:
    big = json.dumps("x" * (1024 * 1024 + 10))
    with server.client(admin) as client:
        response = client.put("/api/v1/kv/big/key", content=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"
        assert client.get("/api/v1/kv/big/key").status_code == 404


def test_a_body_over_the_request_limit_is_413(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        response = client.put("/api/v1/kv/big/huge", content=b'"' + b"y" * (11 * 1024 * 1024) + b'"')
        assert response.status_code == 413
        assert client.get("/api/v1/kv/big/huge").status_code == 404


@pytest.mark.parametrize("body", [b"{bad", b"", b"   ", b'{"a": 1', b"\xff\xfe"])
def test_malformed_json_is_400_and_changes_nothing(server: FlowmillServer, admin: str, body: bytes) -> None:
    with server.client(admin) as client:
        client.put("/api/v1/kv/bad/key", json={"kept": True}).raise_for_status()
        response = client.put("/api/v1/kv/bad/key", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"
        assert client.get("/api/v1/kv/bad/key").json()["value"] == {"kept": True}


@pytest.mark.parametrize("path", [
    "/api/v1/kv/ns/..", "/api/v1/kv/ns/%2e%2e", "/api/v1/kv/ns/a%2Fb", "/api/v1/kv/ns/..%2F..%2Fetc",
    "/api/v1/kv/ns/a..b", "/api/v1/kv/..%2Fns/x", "/api/v1/kv/ns/%00x", "/api/v1/kv/ns/a%20b",
])
def test_path_tricks_in_keys_are_refused_and_store_nothing(server: FlowmillServer, admin: str, path: str) -> None:
    with server.client(admin) as client:
        response = client.put(path, json={"trick": True})
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "error" in response.json()
        keys = [i["key"] for i in client.get("/api/v1/kv/ns").json()["items"]]
        assert not any(".." in k or "/" in k or "\x00" in k for k in keys)


def test_wrong_types_and_unknown_fields_are_400(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        assert client.post("/api/v1/tokens", json={"label": 5}).status_code == 400
        assert client.post("/api/v1/tokens", json={"label": "x", "admin": True}).status_code == 400
        assert client.post("/api/v1/workspaces", json={"id": "w1", "name": "W", "owner": "me"}).status_code == 400
        assert client.post("/api/v1/workspaces", json={"id": ["w1"], "name": "W"}).status_code == 400
        assert client.post("/api/v1/credentials", json={"name": "N", "value": 3}).status_code == 400
        assert client.get("/api/v1/kv/list", params={"limit": "many"}).status_code == 400
        assert client.post("/api/v1/workspaces", content=b"{not json").status_code == 400
        assert [w["id"] for w in client.get("/api/v1/workspaces").json()] == ["main"]
