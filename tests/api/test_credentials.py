"""Credentials: stored encrypted, never shown in clear, anywhere."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.support import FlowmillServer, wait_for


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` (the database, its -wal and -shm, keys, logs...) holding `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def assert_nowhere(server: FlowmillServer, value: str, bodies: list[str]) -> None:
    if server.backend == "sqlite":  # the log of recent writes is among the files read
        assert (server.home / "flowmill.db-wal").stat().st_size > 0
    assert files_containing(server.home, value.encode()) == []
    assert value not in server.dump()  # the rows themselves (on PostgreSQL, outside the data dir)
    assert value.encode().hex() not in server.dump()
    assert [line for line in server.output().splitlines() if value in line] == []
    assert [body for body in bodies if value in body] == []


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    return server.admin_token()


def test_create_list_get_update_delete(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        created = client.post("/api/v1/credentials", json={"name": "CRUD_TOKEN", "value": "v1", "description": "first"})
        assert created.status_code == 201
        credential = created.json()
        assert set(credential) == {"id", "name", "description", "createdBy", "createdAt", "updatedAt"}
        assert credential["name"] == "CRUD_TOKEN" and credential["description"] == "first" and credential["createdBy"] == "admin"
        assert client.get(f"/api/v1/credentials/{credential['id']}").json() == credential
        assert credential in client.get("/api/v1/credentials").json()
        assert client.get(f"/api/v1/w/main/credentials/{credential['id']}").json() == credential
        updated = client.put(f"/api/v1/credentials/{credential['id']}", json={"description": "second"})
        assert updated.status_code == 200
        assert updated.json()["description"] == "second" and updated.json()["name"] == "CRUD_TOKEN"
        assert updated.json()["updatedAt"] >= credential["updatedAt"] and updated.json()["createdAt"] == credential["createdAt"]
        assert client.get(f"/api/v1/credentials/{credential['id']}").json()["description"] == "second"
        assert client.put("/api/v1/credentials/no-such-id", json={"value": "x"}).status_code == 404
        assert client.delete(f"/api/v1/credentials/{credential['id']}").status_code == 204
        assert client.get(f"/api/v1/credentials/{credential['id']}").status_code == 404
        assert client.delete(f"/api/v1/credentials/{credential['id']}").status_code == 404
        assert "CRUD_TOKEN" not in [c["name"] for c in client.get("/api/v1/credentials").json()]
        # the name is free again
        again = client.post("/api/v1/credentials", json={"name": "CRUD_TOKEN", "value": "v2"})
        assert again.status_code == 201 and again.json()["id"] != credential["id"]
    viewer = server.user("cred-viewer", "viewer")
    with server.client(viewer) as client:
        assert "CRUD_TOKEN" in [c["name"] for c in client.get("/api/v1/credentials").json()]
        assert client.put(f"/api/v1/credentials/{again.json()['id']}", json={"value": "x"}).status_code == 403
        assert client.delete(f"/api/v1/credentials/{again.json()['id']}").status_code == 403
    with server.client(admin) as client:
        assert client.get(f"/api/v1/credentials/{again.json()['id']}").json()["updatedAt"] == again.json()["updatedAt"]


def test_a_clear_value_appears_in_no_file_no_log_line_and_no_response(server: FlowmillServer, admin: str) -> None:
    first, second = f"first-{secrets.token_hex(12)}", f"second-{secrets.token_hex(12)}"
    bodies: list[str] = []
    with server.client(admin) as client:
        created = client.post("/api/v1/credentials", json={"name": "API_TOKEN", "value": first, "description": "d"})
        assert created.status_code == 201
        credential = created.json()
        bodies += [created.text, client.get("/api/v1/credentials").text, client.get(f"/api/v1/credentials/{credential['id']}").text]
        # refused attempts carrying the value do not echo it either
        refusals = [
            client.post("/api/v1/credentials", json={"name": "API_TOKEN", "value": first}),
            client.post("/api/v1/credentials", json={"name": "bad name", "value": first}),
            client.post("/api/v1/credentials", json={"name": "OTHER", "value": first, "extra": first}),
            client.post("/api/v1/credentials", json={"name": "OTHER", "value": first, "description": 5}),
            client.post("/api/v1/credentials", content=f'{{"name": "OTHER", "value": "{first}"'.encode(),
                        headers={"content-type": "application/json"}),
        ]
        assert [r.status_code for r in refusals] == [409, 400, 400, 400, 400]
        bodies += [r.text for r in refusals]
    assert_nowhere(server, first, bodies)  # after the first write
    with server.client(admin) as client:
        updated = client.put(f"/api/v1/credentials/{credential['id']}", json={"value": second})
        assert updated.status_code == 200
        bodies += [updated.text, client.get(f"/api/v1/credentials/{credential['id']}").text, client.get("/api/v1/credentials").text]
        wait_for(lambda: client.get("/api/v1/audit", params={"outcome": "rejected"}).json()["items"], what="the refusals' audit")
        bodies += [client.get("/api/v1/audit", params={"limit": 200}).text, client.get("/metrics").text]
    for value in (first, second):  # after the update
        assert_nowhere(server, value, bodies)
    assert any(credential["id"] in body for body in bodies)  # the bodies were the right ones


def test_duplicate_and_bad_names(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "TAKEN", "value": "x"}).raise_for_status()
        duplicate = client.post("/api/v1/credentials", json={"name": "TAKEN", "value": "y"})
        assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "conflict"
        bad_names = ("bad name!", "", "1STARTS_WITH_A_DIGIT", "has-dash", "../etc", "x" * 201, "naïve")
        for name in bad_names:
            response = client.post("/api/v1/credentials", json={"name": name, "value": "x"})
            assert response.status_code == 400, name
            assert response.json()["error"]["code"] == "bad_request"
        big = client.post("/api/v1/credentials", json={"name": "BIG", "value": "x" * 70_000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        names = [c["name"] for c in client.get("/api/v1/credentials").json()]
    assert names.count("TAKEN") == 1 and "BIG" not in names
    stored = {row[0] for row in server.query("SELECT name FROM credential")}
    assert stored & {*bad_names, "BIG"} == set()


def test_unknown_fields_and_wrong_types_change_nothing(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        credential = client.post("/api/v1/credentials", json={"name": "STEADY", "value": "v", "description": "kept"}).json()
        before = server.query("SELECT ciphertext, description, updated_at FROM credential WHERE id = $1", credential["id"])
        refused = {
            "create with an unknown field": client.post("/api/v1/credentials", json={"name": "NEW1", "value": "v", "owner": "me"}),
            "create with a number value": client.post("/api/v1/credentials", json={"name": "NEW2", "value": 3}),
            "create without a value": client.post("/api/v1/credentials", json={"name": "NEW3"}),
            "create from a list": client.post("/api/v1/credentials", json=[{"name": "NEW4", "value": "v"}]),
            "update with an unknown field": client.put(f"/api/v1/credentials/{credential['id']}", json={"value": "w", "name": "RENAMED"}),
            "update with a number value": client.put(f"/api/v1/credentials/{credential['id']}", json={"value": 4}),
            "update with a list description": client.put(f"/api/v1/credentials/{credential['id']}", json={"description": ["x"]}),
            "update with malformed JSON": client.put(f"/api/v1/credentials/{credential['id']}", content=b'{"value": "w"',
                                                     headers={"content-type": "application/json"}),
        }
        assert {what: r.status_code for what, r in refused.items()} == {what: 400 for what in refused}
        assert all(r.json()["error"]["code"] == "bad_request" for r in refused.values())
        assert client.get(f"/api/v1/credentials/{credential['id']}").json() == credential
    assert server.query("SELECT ciphertext, description, updated_at FROM credential WHERE id = $1", credential["id"]) == before
    assert server.count("credential", "name IN ('NEW1', 'NEW2', 'NEW3', 'NEW4', 'RENAMED')") == 0
