"""Authentication and authorization: tokens, roles, workspaces."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from tests.support import PASSWORD, FlowmillServer


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signing_key(server: FlowmillServer) -> bytes:
    return bytes.fromhex((Path(server.home) / "jwt.key").read_text().strip())


def status_of(server: FlowmillServer, token: str | None, method: str = "GET", path: str = "/api/v1/kv/ns") -> int:
    with server.client(token) as client:
        return client.request(method, path, json={"v": 1} if method == "PUT" else None).status_code


def test_no_token_is_401_in_the_envelope(server: FlowmillServer) -> None:
    with server.client() as client:
        response = client.get("/api/v1/kv/ns")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_viewer_cannot_write(server: FlowmillServer) -> None:
    viewer = server.user("viewer1", "viewer")
    with server.client(viewer) as client:
        assert client.get("/api/v1/kv/ns").status_code == 200
        response = client.put("/api/v1/kv/ns/key", json={"v": 1})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        assert client.post("/api/v1/credentials", json={"name": "X", "value": "y"}).status_code == 403
    with server.client(server.admin_token()) as client:
        assert client.get("/api/v1/kv/ns/key").status_code == 404


def test_an_editor_can_write(server: FlowmillServer) -> None:
    editor = server.user("editor1", "editor")
    assert status_of(server, editor, "PUT", "/api/v1/kv/ns/by-editor") == 200


def test_forged_tampered_unsigned_and_expired_jwts_are_401(server: FlowmillServer) -> None:
    good = server.admin_token()
    assert status_of(server, good) == 200
    now = int(time.time())
    claims = {"sub": "admin", "iat": now, "exp": now + 3600, "iss": "flowmill"}
    forged = jwt.encode(claims, b"another key of thirty-two bytes!", algorithm="HS256")
    header, payload, signature = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_claims["sub"] = "someone-else"
    tampered = f"{header}.{b64(tampered_claims)}.{signature}"
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, signing_key(server), algorithm="HS256")
    other_alg = jwt.encode(claims, signing_key(server), algorithm="HS512")
    for token in (forged, tampered, unsigned, expired, other_alg, "garbage", good[:-2]):
        assert status_of(server, token) == 401, token


def test_api_tokens_work_until_revoked_or_expired(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        created = client.post("/api/v1/tokens", json={"label": "ci"})
        assert created.status_code == 201
        token = created.json()["token"]
        listed = client.get("/api/v1/tokens").json()
        assert listed and all(t["token"] is None for t in listed)
        assert status_of(server, token) == 200
        assert client.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 204
        assert client.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 404
    assert status_of(server, token) == 401
    with server.client(admin) as client:
        soon = client.post("/api/v1/tokens", json={"label": "short", "expiresAt": int(time.time() * 1000) + 1500}).json()
        assert status_of(server, soon["token"]) == 200
        time.sleep(2.6)
        assert status_of(server, soon["token"]) == 401
        assert client.post("/api/v1/tokens", json={"label": "past", "expiresAt": 1000}).status_code == 400
    assert status_of(server, token[:-1] + ("A" if token[-1] != "A" else "B")) == 401


def test_registration_rules(server: FlowmillServer) -> None:
    assert server.register("late-comer").status_code == 401
    viewer = server.user("viewer2", "viewer")
    assert server.register("late-comer", token=viewer).status_code == 403
    assert server.register("late-comer", token=server.admin_token(), role="editor").status_code == 201
    assert server.register("late-comer", token=server.admin_token()).status_code == 409
    assert server.register("x", token=server.admin_token()).status_code == 400
    assert server.register("shortpass", password="short", token=server.admin_token()).status_code == 400
    assert server.register("badrole", role="god", token=server.admin_token()).status_code == 400


def test_wrong_password_is_401_and_repeated_failures_429(server: FlowmillServer) -> None:
    server.user("target", "viewer")
    with server.client() as client:
        assert client.post("/auth/login", json={"username": "target", "password": "wrong-password"}).status_code == 401
        assert client.post("/auth/login", json={"username": "nobody", "password": PASSWORD}).status_code == 401
        codes = [client.post("/auth/login", json={"username": "target", "password": "wrong"}).status_code for _ in range(12)]
        assert codes[-1] == 429
        limited = client.post("/auth/login", json={"username": "target", "password": PASSWORD})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


def test_workspaces_are_isolated(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        assert client.post("/api/v1/workspaces", json={"id": "team-a", "name": "A"}).status_code == 201
        assert client.post("/api/v1/workspaces", json={"id": "team-b", "name": "B"}).status_code == 201
        assert client.post("/api/v1/workspaces", json={"id": "team-b", "name": "B"}).status_code == 409
        assert client.put("/api/v1/w/team-b/kv/ns/secret", json={"owner": "b"}).status_code == 200
        credential = client.post("/api/v1/w/team-b/credentials", json={"name": "B_TOKEN", "value": "b-secret"}).json()
        assert client.get("/api/v1/w/no-such-team/kv/ns").status_code == 404
    user_a = server.user("alice-a", "admin", workspace="team-a")
    with server.client(user_a) as client:
        assert client.put("/api/v1/w/team-a/kv/ns/mine", json=1).status_code == 200
        assert [w["id"] for w in client.get("/api/v1/workspaces").json()] == ["team-a"]
        refused = [
            client.get("/api/v1/w/team-b/kv/ns/secret"),
            client.get("/api/v1/w/team-b/kv/ns"),
            client.put("/api/v1/w/team-b/kv/ns/secret", json={"owner": "a"}),
            client.delete("/api/v1/w/team-b/kv/ns/secret"),
            client.get("/api/v1/w/team-b/credentials"),
            client.get(f"/api/v1/w/team-b/credentials/{credential['id']}"),
            client.put(f"/api/v1/w/team-b/credentials/{credential['id']}", json={"value": "x"}),
            client.delete(f"/api/v1/w/team-b/credentials/{credential['id']}"),
            client.get("/api/v1/w/team-b/audit"),
            client.put("/api/v1/workspaces/team-b/members/alice-a", json={"role": "admin"}),
            client.get("/api/v1/kv/ns"),  # workspace main: no role there either
        ]
        assert [r.status_code for r in refused] == [403] * len(refused)
    with server.client(admin) as client:
        assert client.get("/api/v1/w/team-b/kv/ns/secret").json()["value"] == {"owner": "b"}
        assert client.get(f"/api/v1/w/team-b/credentials/{credential['id']}").status_code == 200


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "bearer a b", "Token x", "Bearer fm_0123456789abcdef_nope"])
def test_malformed_authorization_headers_are_401(server: FlowmillServer, header: str) -> None:
    with server.client() as client:
        assert client.get("/api/v1/kv/ns", headers={"Authorization": header}).status_code == 401
