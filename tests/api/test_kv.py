"""The key-value store: values, listing, limits, and bad input that changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import FlowmillServer

VALUES = [
    {"a": [1, 2, {"b": None}]}, [1, "two", 3.5], [], {}, "text", "", 42, -7, 0, 4.25, 1e-300, 2**62,
    True, False, None, {"unicode": "héllo ✓ 😀", "escapes": "quote \" backslash \\ newline \n tab \t nul \u0000"},
]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    return server.admin_token()


def all_keys(client, namespace: str, **params: object) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """Every key of a namespace, following the cursor; (keys, pages)."""
    keys: list[str] = []
    cursor = None
    for pages in range(1, 1000):
        response = client.get(f"/api/v1/kv/{namespace}", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        keys += [item["key"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return keys, pages
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("value", VALUES, ids=[json.dumps(v)[:20] for v in VALUES])
def test_every_json_value_round_trips(server: FlowmillServer, admin: str, value: object) -> None:
    with server.client(admin) as client:
        put = client.put("/api/v1/kv/values/key", content=json.dumps(value))
        assert put.status_code == 200, put.text
        assert put.json()["namespace"] == "values" and put.json()["key"] == "key"
        got = client.get("/api/v1/kv/values/key").json()
        assert got["value"] == value and type(got["value"]) is type(value)
        assert got["namespace"] == "values" and got["key"] == "key" and got["updatedAt"] == put.json()["updatedAt"]


def test_put_replaces_and_delete_removes(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.put("/api/v1/kv/del/gone", json=1).raise_for_status()
        client.put("/api/v1/kv/del/gone", json={"second": True}).raise_for_status()
        assert client.get("/api/v1/kv/del/gone").json()["value"] == {"second": True}
        assert server.count("kv_entry", "namespace = 'del'") == 1
        assert client.delete("/api/v1/kv/del/gone").status_code == 204
        assert client.get("/api/v1/kv/del/gone").status_code == 404
        assert client.get("/api/v1/kv/del/gone").json()["error"]["code"] == "not_found"
        assert client.delete("/api/v1/kv/del/gone").status_code == 404
    assert server.count("kv_entry", "namespace = 'del'") == 0


def test_both_url_forms_address_workspace_main(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.put("/api/v1/w/main/kv/forms/long", json="long form").raise_for_status()
        client.put("/api/v1/kv/forms/short", json="short form").raise_for_status()
        assert client.get("/api/v1/kv/forms/long").json()["value"] == "long form"
        assert client.get("/api/v1/w/main/kv/forms/short").json()["value"] == "short form"
        assert [i["key"] for i in client.get("/api/v1/w/main/kv/forms").json()["items"]] == ["long", "short"]
    assert server.count("kv_entry", "namespace = 'forms' AND workspace_id = 'main'") == 2


def test_listing_with_prefix_and_cursor(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        for i in range(25):
            client.put(f"/api/v1/kv/list/item-{i:02d}", json=i).raise_for_status()
        for key in ("other", "item_x", "itemZ"):
            client.put(f"/api/v1/kv/list/{key}", json=0).raise_for_status()
        keys, pages = all_keys(client, "list", prefix="item-", limit=10)
        assert pages == 3
        assert keys == [f"item-{i:02d}" for i in range(25)]
        first = client.get("/api/v1/kv/list", params={"prefix": "item-", "limit": 10}).json()
        assert len(first["items"]) == 10 and first["nextCursor"] is not None
        assert all(isinstance(item["updatedAt"], int) for item in first["items"])
        everything, _ = all_keys(client, "list", limit=7)
        assert sorted(everything) == everything and len(set(everything)) == len(everything) == 28
        assert all_keys(client, "list")[0] == everything
        # "_" and "%" are not wildcards
        assert all_keys(client, "list", prefix="item_")[0] == ["item_x"]
        assert all_keys(client, "list", prefix="item%")[0] == []
        assert all_keys(client, "list", prefix="nothing")[0] == []
        assert all_keys(client, "empty-namespace")[0] == []
        past_the_end = client.get("/api/v1/kv/list", params={"cursor": "zzz"}).json()
        assert past_the_end == {"items": [], "nextCursor": None}
        for limit in (0, -1, 1001, "many"):
            response = client.get("/api/v1/kv/list", params={"limit": limit})
            assert response.status_code == 400, limit
            assert response.json()["error"]["code"] == "bad_request"
        assert len(client.get("/api/v1/kv/list", params={"limit": 1000}).json()["items"]) == 28


def test_a_value_over_the_limit_is_413_and_nothing_is_stored(server: FlowmillServer, admin: str) -> None:
    at_limit = b'"' + b"a" * (MIB - 2) + b'"'
    assert len(at_limit) == MIB
    with server.client(admin) as client:
        assert client.put("/api/v1/kv/big/at-limit", content=at_limit).status_code == 200
        assert len(client.get("/api/v1/kv/big/at-limit").json()["value"]) == MIB - 2
        client.put("/api/v1/kv/big/kept", json="small").raise_for_status()
        for key, body in (("over", b'"' + b"a" * (MIB - 1) + b'"'), ("kept", json.dumps("x" * (MIB + 10)).encode())):
            response = client.put(f"/api/v1/kv/big/{key}", content=body)
            assert response.status_code == 413, key
            assert response.json()["error"]["code"] == "too_large"
        assert client.get("/api/v1/kv/big/over").status_code == 404
        assert client.get("/api/v1/kv/big/kept").json()["value"] == "small"


def test_a_body_over_the_request_limit_is_413(server: FlowmillServer, admin: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        yield b'"'
        for _ in range(11):
            yield b"z" * MIB
        yield b'"'

    for path, body in (
        ("/api/v1/kv/big/huge", b'"' + b"y" * (11 * MIB) + b'"'),
        ("/api/v1/kv/big/chunked", chunks()),
        ("/api/v1/credentials", b'{"name": "HUGE", "value": "' + b"y" * (11 * MIB) + b'"}'),
    ):
        # a connection of its own each: the server may close one after refusing its body
        with server.client(admin) as client:
            response = client.request("PUT" if "kv" in path else "POST", path, content=body,
                                      headers={"content-type": "application/json"})
        assert response.status_code == 413, path
        assert response.json()["error"]["code"] == "too_large"
    assert server.count("kv_entry", "key IN ('huge', 'chunked')") == 0
    assert server.count("credential", "name = 'HUGE'") == 0


@pytest.mark.parametrize("body", [
    b"{bad", b"", b"   ", b'{"a": 1', b"\xff\xfe", b"1 2", b'{"a": 1} x', b"NaN", b"undefined", b"{'a': 1}",
    b'"\\ud800"', b"[1,]", b"1e999",
])
def test_malformed_json_is_400_and_changes_nothing(server: FlowmillServer, admin: str, body: bytes) -> None:
    with server.client(admin) as client:
        client.put("/api/v1/kv/bad/key", json={"kept": True}).raise_for_status()
        before = client.get("/api/v1/kv/bad/key").json()
        response = client.put("/api/v1/kv/bad/key", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"
        assert client.put("/api/v1/kv/bad/fresh", content=body).status_code == 400
        assert client.get("/api/v1/kv/bad/key").json() == before
        assert client.get("/api/v1/kv/bad/fresh").status_code == 404


@pytest.mark.parametrize("path", [
    "/api/v1/kv/ns/..", "/api/v1/kv/ns/%2e%2e", "/api/v1/kv/ns/a%2Fb", "/api/v1/kv/ns/..%2F..%2Fetc",
    "/api/v1/kv/ns/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/v1/kv/ns/a..b", "/api/v1/kv/..%2Fns/x",
    "/api/v1/kv/%2e%2e/x", "/api/v1/kv/ns/%00x", "/api/v1/kv/ns/a%20b", "/api/v1/kv/ns/a%5Cb", "/api/v1/kv/ns/.hidden",
    "/api/v1/kv/ns/" + "k" * 513,
])
def test_path_tricks_in_keys_are_refused_and_store_nothing(server: FlowmillServer, admin: str, path: str) -> None:
    before = server.count("kv_entry")
    with server.client(admin) as client:
        response = client.put(path, json={"trick": True})
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.json()["error"]["code"]
        assert 400 <= client.get(path).status_code < 500
    assert server.count("kv_entry") == before
    assert server.count("kv_entry", "value LIKE '%trick%'") == 0


def test_long_names_up_to_their_limits(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        assert client.put("/api/v1/kv/ns/" + "k" * 512, json=1).status_code == 200
        assert client.put("/api/v1/kv/" + "n" * 200 + "/k", json=1).status_code == 200
        assert client.put("/api/v1/kv/" + "n" * 201 + "/k", json=1).status_code == 400
        assert client.get("/api/v1/kv/ns/" + "k" * 512).json()["value"] == 1


def test_unknown_fields_and_wrong_types_are_400_and_change_nothing(server: FlowmillServer, admin: str) -> None:
    server.user("kv-member", "viewer")
    tables = ("app_user", "member", "api_token", "workspace", "credential", "kv_entry")
    before = {table: server.count(table) for table in tables}
    with server.client(admin) as client:
        refused = {
            "token with a number label": client.post("/api/v1/tokens", json={"label": 5}),
            "token with an unknown field": client.post("/api/v1/tokens", json={"label": "x", "admin": True}),
            "token with a snake_case field": client.post("/api/v1/tokens", json={"label": "x", "expires_at": 10**13}),
            "token with a text expiry": client.post("/api/v1/tokens", json={"label": "x", "expiresAt": "soon"}),
            "workspace with an unknown field": client.post("/api/v1/workspaces", json={"id": "w1", "name": "W", "owner": "me"}),
            "workspace with a list id": client.post("/api/v1/workspaces", json={"id": ["w1"], "name": "W"}),
            "workspace without a name": client.post("/api/v1/workspaces", json={"id": "w1"}),
            "workspace with a bad id": client.post("/api/v1/workspaces", json={"id": "../w1", "name": "W"}),
            "workspace from malformed JSON": client.post("/api/v1/workspaces", content=b"{not json"),
            "member with an unknown field": client.put("/api/v1/workspaces/main/members/kv-member", json={"role": "admin", "x": 1}),
            "member with a number role": client.put("/api/v1/workspaces/main/members/kv-member", json={"role": 3}),
            "member with an unknown role": client.put("/api/v1/workspaces/main/members/kv-member", json={"role": "owner"}),
            "register with an unknown field": client.post("/auth/register", json={"username": "newbie", "password": "password-1234", "superadmin": True}),
            "register with a number password": client.post("/auth/register", json={"username": "newbie", "password": 12345678}),
            "credential with an unknown field": client.post("/api/v1/credentials", json={"name": "N", "value": "v", "x": 1}),
            "login with an unknown field": client.post("/auth/login", json={"username": "admin", "password": "password-1234", "x": 1}),
            "login with a number password": client.post("/auth/login", json={"username": "admin", "password": 1}),
            "audit with a text since": client.get("/api/v1/audit", params={"since": "yesterday"}),
            "audit with a text cursor": client.get("/api/v1/audit", params={"cursor": "abc"}),
        }
        assert {what: r.status_code for what, r in refused.items()} == {what: 400 for what in refused}
        assert all(r.json()["error"]["code"] == "bad_request" for r in refused.values())
        assert [w["id"] for w in client.get("/api/v1/workspaces").json()] == ["main"]
    assert {table: server.count(table) for table in tables} == before
    assert server.query("SELECT role FROM member WHERE username = 'kv-member'") == [("viewer",)]


@pytest.mark.parametrize("what", ["token label", "workspace name"])
def test_text_longer_than_its_column_is_refused_not_a_500(server: FlowmillServer, admin: str, what: str) -> None:
    """The schema holds 200 characters for these; longer text is bad input (a 4xx), or else it
    is kept whole. PostgreSQL enforces the column's length, SQLite does not."""
    long = "L" * 300
    with server.client(admin) as client:
        if what == "token label":
            response = client.post("/api/v1/tokens", json={"label": long})
            kept = [t["label"] for t in client.get("/api/v1/tokens").json()]
        else:
            response = client.post("/api/v1/workspaces", json={"id": "long-name", "name": long})
            kept = [w["name"] for w in client.get("/api/v1/workspaces").json()]
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert long in kept
    else:
        assert 400 <= response.status_code < 500 and long not in kept


def test_the_same_names_live_apart_in_two_workspaces(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/workspaces", json={"id": "kv-other", "name": "Other"}).raise_for_status()
        client.put("/api/v1/kv/shared/key", json="main's").raise_for_status()
        client.put("/api/v1/w/kv-other/kv/shared/key", json="other's").raise_for_status()
        main_credential = client.post("/api/v1/credentials", json={"name": "SHARED", "value": "a"})
        other_credential = client.post("/api/v1/w/kv-other/credentials", json={"name": "SHARED", "value": "b"})
        assert main_credential.status_code == other_credential.status_code == 201
        assert client.get("/api/v1/kv/shared/key").json()["value"] == "main's"
        assert client.get("/api/v1/w/kv-other/kv/shared/key").json()["value"] == "other's"
        assert client.delete("/api/v1/w/kv-other/kv/shared/key").status_code == 204
        assert client.get("/api/v1/kv/shared/key").json()["value"] == "main's"
        assert client.delete(f"/api/v1/w/kv-other/credentials/{main_credential.json()['id']}").status_code == 404
        assert client.delete(f"/api/v1/credentials/{main_credential.json()['id']}").status_code == 204
        assert [c["name"] for c in client.get("/api/v1/w/kv-other/credentials").json()] == ["SHARED"]
