"""Authentication and authorization: tokens, roles, registration, login limits, workspaces."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support import PASSWORD, FlowmillServer, wait_for


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signing_key(server: FlowmillServer) -> bytes:
    return bytes.fromhex((Path(server.home) / "jwt.key").read_text().strip())


def status_of(server: FlowmillServer, token: str | None, method: str = "GET", path: str = "/api/v1/kv/ns") -> int:
    with server.client(token) as client:
        return client.request(method, path, json={"v": 1} if method == "PUT" else None).status_code


def one_char_changed(segment: str, at: int) -> str:
    """`segment` with the base64url character at `at` replaced by another one."""
    replacement = "A" if segment[at] != "A" else "B"
    return segment[:at] + replacement + segment[at + 1:]


def test_no_token_is_401_in_the_envelope(server: FlowmillServer) -> None:
    with server.client() as client:
        for method, path in (("GET", "/api/v1/kv/ns"), ("PUT", "/api/v1/kv/ns/k"), ("GET", "/api/v1/credentials"),
                             ("GET", "/api/v1/audit"), ("POST", "/api/v1/tokens"), ("GET", "/api/v1/w/main/kv/ns")):
            response = client.request(method, path, json={"label": "x"} if method != "GET" else None)
            assert response.status_code == 401, (method, path)
            error = response.json()["error"]
            assert error["code"] == "unauthorized" and error["message"] and "details" in error
            assert response.headers["www-authenticate"] == "Bearer"
    assert server.count("kv_entry", "key = 'k'") == 0


def test_a_viewer_cannot_write(server: FlowmillServer) -> None:
    viewer = server.user("viewer1", "viewer")
    with server.client(viewer) as client:
        assert client.get("/api/v1/kv/ns").status_code == 200
        response = client.put("/api/v1/kv/ns/key", json={"v": 1})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        assert client.post("/api/v1/credentials", json={"name": "X", "value": "y"}).status_code == 403
        token = client.post("/api/v1/tokens", json={"label": "viewer's"}).json()["token"]
    assert status_of(server, token, "PUT", "/api/v1/kv/ns/key") == 403  # an API token has its owner's role
    with server.client(server.admin_token()) as client:
        assert client.get("/api/v1/kv/ns/key").status_code == 404
        assert "X" not in [c["name"] for c in client.get("/api/v1/credentials").json()]


def test_an_executor_cannot_write_an_editor_can(server: FlowmillServer) -> None:
    executor = server.user("executor1", "executor")
    editor = server.user("editor1", "editor")
    assert status_of(server, executor, "PUT", "/api/v1/kv/ns/by-executor") == 403
    assert status_of(server, editor, "PUT", "/api/v1/kv/ns/by-editor") == 200
    assert status_of(server, editor, "GET", "/api/v1/audit") == 403  # audit is for admins


def test_forged_tampered_unsigned_and_expired_jwts_are_401(server: FlowmillServer) -> None:
    good = server.admin_token()
    assert status_of(server, good) == 200
    key = signing_key(server)
    now = int(time.time())
    claims = {"sub": "admin", "iat": now, "exp": now + 3600, "iss": "flowmill"}
    assert status_of(server, jwt.encode(claims, key, algorithm="HS256")) == 200  # the claims themselves are fine
    header, payload, signature = good.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tokens = {
        "signed with another key": jwt.encode(claims, b"another key of thirty-two bytes!", algorithm="HS256"),
        "one character of the payload changed": f"{header}.{one_char_changed(payload, len(payload) // 2)}.{signature}",
        "payload re-encoded with another user": f"{header}.{b64({**decoded, 'sub': 'viewer1'})}.{signature}",
        "payload re-encoded with a later expiry": f"{header}.{b64({**decoded, 'exp': now + 10**6})}.{signature}",
        "alg none, empty signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "alg none, the real signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "expired, signed with the real key": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, key, algorithm="HS256"),
        "HS512 with the real key": jwt.encode(claims, key, algorithm="HS512"),
        "another issuer": jwt.encode({**claims, "iss": "someone"}, key, algorithm="HS256"),
        "no expiry": jwt.encode({"sub": "admin", "iat": now, "iss": "flowmill"}, key, algorithm="HS256"),
        "a user that does not exist": jwt.encode({**claims, "sub": "nobody-at-all"}, key, algorithm="HS256"),
        "signature cut short": good[:-2],
        "garbage": "garbage",
    }
    for what, token in tokens.items():
        with server.client(token) as client:
            response = client.get("/api/v1/kv/ns")
        assert response.status_code == 401, what
        assert response.json()["error"]["code"] == "unauthorized", what


def test_api_tokens_work_until_revoked_or_expired(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        created = client.post("/api/v1/tokens", json={"label": "ci"})
        assert created.status_code == 201
        token = created.json()["token"]
        assert token and created.json()["label"] == "ci"
        listed = client.get("/api/v1/tokens").json()
        assert created.json()["id"] in [t["id"] for t in listed]
        assert all(t["token"] is None for t in listed) and token not in client.get("/api/v1/tokens").text
        assert status_of(server, token) == 200
        assert status_of(server, token, "PUT", "/api/v1/kv/ns/by-api-token") == 200
        assert client.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 204
        assert client.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 404
        revoked = next(t for t in client.get("/api/v1/tokens").json() if t["id"] == created.json()["id"])
        assert revoked["revokedAt"] is not None
    assert status_of(server, token) == 401
    assert status_of(server, token[:-1] + ("A" if token[-1] != "A" else "B")) == 401
    with server.client(admin) as client:
        soon = client.post("/api/v1/tokens", json={"label": "short", "expiresAt": int(time.time() * 1000) + 1500}).json()
        assert status_of(server, soon["token"]) == 200
        time.sleep(max(0.0, soon["expiresAt"] / 1000 - time.time()) + 0.2)
        assert status_of(server, soon["token"]) == 401
        assert client.post("/api/v1/tokens", json={"label": "past", "expiresAt": 1000}).status_code == 400


def test_tokens_belong_to_their_owner(server: FlowmillServer) -> None:
    owner = server.user("token-owner", "editor")
    other = server.user("token-other", "admin")  # an admin of main, but not the instance admin
    with server.client(owner) as client:
        mine = client.post("/api/v1/tokens", json={"label": "mine"}).json()
    with server.client(other) as client:
        assert mine["id"] not in [t["id"] for t in client.get("/api/v1/tokens").json()]
        assert client.delete(f"/api/v1/tokens/{mine['id']}").status_code == 404
    assert status_of(server, mine["token"]) == 200


def test_registration_rules(server: FlowmillServer) -> None:
    assert server.register("late-comer").status_code == 401
    viewer = server.user("viewer2", "viewer")
    assert server.register("late-comer", token=viewer).status_code == 403
    created = server.register("late-comer", token=server.admin_token(), role="editor")
    assert created.status_code == 201
    assert created.json() == {"username": "late-comer", "role": "editor", "superadmin": False}
    assert server.register("late-comer", token=server.admin_token()).status_code == 409
    assert server.register("x", token=server.admin_token()).status_code == 400
    assert server.register("shortpass", password="short", token=server.admin_token()).status_code == 400
    assert server.register("badrole", role="god", token=server.admin_token()).status_code == 400
    assert status_of(server, server.login("late-comer"), "PUT", "/api/v1/kv/ns/by-late-comer") == 200
    assert server.count("app_user", "username IN ('x', 'shortpass', 'badrole')") == 0


def race_first_registrations(server: FlowmillServer, callers: int) -> list[int]:
    """`callers` registrations sent at the same moment to a server with no user yet."""
    codes: list[int] = []
    start = threading.Barrier(callers)

    def register(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.get("/healthz")  # connected before the race starts
            start.wait(10)
            codes.append(client.post("/auth/register", json={"username": f"first-{n}", "password": PASSWORD}).status_code)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return codes


def test_the_first_registration_is_open_to_one_caller_only(backend: str) -> None:
    """Racing first registrations: exactly one becomes the instance admin (two rounds, each on
    a new instance, since a race does not show every time)."""
    for _ in range(2):
        server = FlowmillServer(backend)
        try:
            server.start()
            assert sorted(race_first_registrations(server, 8)) == [201] + [401] * 7
            assert server.count("app_user") == 1
            assert server.count("app_user", "is_superadmin = 1") == 1
        finally:
            server.close()


def test_wrong_password_is_401_and_repeated_failures_429(server: FlowmillServer) -> None:
    server.user("target", "viewer")
    server.user("bystander", "viewer")
    with server.client() as client:
        first = client.post("/auth/login", json={"username": "target", "password": "wrong-password"})
        assert first.status_code == 401 and first.json()["error"]["code"] == "unauthorized"
        assert client.post("/auth/login", json={"username": "nobody", "password": PASSWORD}).status_code == 401
        codes = [client.post("/auth/login", json={"username": "target", "password": "wrong"}).status_code for _ in range(12)]
        assert codes == [401] * 9 + [429] * 3  # ten failures in the minute, then refused
        limited = client.post("/auth/login", json={"username": "target", "password": PASSWORD})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        assert "token" not in limited.json()
    assert server.login("bystander")  # the limit is on the username: another user still logs in


def test_workspaces_are_isolated(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        assert client.post("/api/v1/workspaces", json={"id": "team-a", "name": "A"}).status_code == 201
        assert client.post("/api/v1/workspaces", json={"id": "team-b", "name": "B"}).status_code == 201
        assert client.post("/api/v1/workspaces", json={"id": "team-b", "name": "B"}).status_code == 409
        assert client.put("/api/v1/w/team-b/kv/ns/secret", json={"owner": "b"}).status_code == 200
        credential = client.post("/api/v1/w/team-b/credentials", json={"name": "B_TOKEN", "value": "b-secret", "description": "b's"}).json()
        b_before = {
            "kv": client.get("/api/v1/w/team-b/kv/ns").json(),
            "credentials": client.get("/api/v1/w/team-b/credentials").json(),
        }
    user_a = server.user("alice-a", "admin", workspace="team-a")
    with server.client(user_a) as client:
        assert client.put("/api/v1/w/team-a/kv/ns/mine", json=1).status_code == 200
        assert [w["id"] for w in client.get("/api/v1/workspaces").json()] == ["team-a"]
        refused = {
            "read a key": client.get("/api/v1/w/team-b/kv/ns/secret"),
            "list keys": client.get("/api/v1/w/team-b/kv/ns"),
            "overwrite a key": client.put("/api/v1/w/team-b/kv/ns/secret", json={"owner": "a"}),
            "add a key": client.put("/api/v1/w/team-b/kv/ns/planted", json={"owner": "a"}),
            "delete a key": client.delete("/api/v1/w/team-b/kv/ns/secret"),
            "list credentials": client.get("/api/v1/w/team-b/credentials"),
            "read a credential": client.get(f"/api/v1/w/team-b/credentials/{credential['id']}"),
            "add a credential": client.post("/api/v1/w/team-b/credentials", json={"name": "PLANTED", "value": "x"}),
            "change a credential": client.put(f"/api/v1/w/team-b/credentials/{credential['id']}", json={"value": "x", "description": "a's"}),
            "delete a credential": client.delete(f"/api/v1/w/team-b/credentials/{credential['id']}"),
            "read the audit": client.get("/api/v1/w/team-b/audit"),
            "join b": client.put("/api/v1/workspaces/team-b/members/alice-a", json={"role": "admin"}),
            "read main": client.get("/api/v1/kv/ns"),  # workspace main: no role there either
        }
        assert {what: r.status_code for what, r in refused.items()} == {what: 403 for what in refused}
        assert all(r.json()["error"]["code"] == "forbidden" for r in refused.values())
        # a's own credential id does not reach b's either
        mine = client.post("/api/v1/w/team-a/credentials", json={"name": "A_TOKEN", "value": "a"}).json()
        assert client.get(f"/api/v1/w/team-a/credentials/{credential['id']}").status_code == 404
    with server.client(admin) as client:
        assert client.get("/api/v1/w/team-b/kv/ns/secret").json()["value"] == {"owner": "b"}
        assert client.get("/api/v1/w/team-b/kv/ns").json() == b_before["kv"]
        assert client.get("/api/v1/w/team-b/credentials").json() == b_before["credentials"]
        assert client.get(f"/api/v1/w/team-b/credentials/{mine['id']}").status_code == 404

        def b_audit() -> list[dict[str, object]]:
            return client.get("/api/v1/w/team-b/audit", params={"actor": "alice-a", "limit": 200}).json()["items"]

        # a refusal's entry is written just after its answer: 6 refused changes in b
        entries = wait_for(lambda: len(b_audit()) >= 6 and b_audit(), what="the refusals' audit entries")
        assert {e["outcome"] for e in entries} == {"denied"} and {e["workspace"] for e in entries} == {"team-b"}
    assert server.count("member", "workspace_id = 'team-b' AND username = 'alice-a'") == 0


def test_a_workspace_that_does_not_exist_is_404_for_the_instance_admin(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        answers = [
            client.get("/api/v1/w/no-such-team/kv/ns"),
            client.get("/api/v1/w/no-such-team/kv/ns/k"),
            client.put("/api/v1/w/no-such-team/kv/ns/k", json=1),
            client.get("/api/v1/w/no-such-team/credentials"),
            client.post("/api/v1/w/no-such-team/credentials", json={"name": "N", "value": "v"}),
            client.get("/api/v1/w/no-such-team/audit"),
            client.put("/api/v1/workspaces/no-such-team/members/admin", json={"role": "viewer"}),
        ]
    assert [r.status_code for r in answers] == [404] * len(answers)
    assert all(r.json()["error"]["code"] == "not_found" for r in answers)
    assert server.count("kv_entry", "workspace_id = 'no-such-team'") == 0
    assert server.count("credential", "workspace_id = 'no-such-team'") == 0
    assert server.count("member", "workspace_id = 'no-such-team'") == 0


def test_role_changes_take_effect_at_once(server: FlowmillServer) -> None:
    admin = server.admin_token()
    with server.client(admin) as client:
        client.post("/api/v1/workspaces", json={"id": "team-c", "name": "C"}).raise_for_status()
    carol = server.user("carol-c", "editor", workspace="team-c")
    assert status_of(server, carol, "PUT", "/api/v1/w/team-c/kv/ns/k") == 200
    with server.client(admin) as client:
        client.put("/api/v1/workspaces/team-c/members/carol-c", json={"role": "viewer"}).raise_for_status()
    assert status_of(server, carol, "PUT", "/api/v1/w/team-c/kv/ns/k") == 403
    assert status_of(server, carol, "GET", "/api/v1/w/team-c/kv/ns/k") == 200
    with server.client(admin) as client:
        assert client.delete("/api/v1/workspaces/team-c/members/carol-c").status_code == 204
        assert client.delete("/api/v1/workspaces/team-c/members/carol-c").status_code == 404
    assert status_of(server, carol, "GET", "/api/v1/w/team-c/kv/ns/k") == 403


def test_a_workspace_admin_manages_its_own_members(server: FlowmillServer) -> None:
    """DESIGN §4.2 and the handler's own docstring: members are managed by admins of the
    workspace, not only by the instance admin."""
    admin = server.admin_token()
    with server.client(admin) as client:
        client.post("/api/v1/workspaces", json={"id": "team-d", "name": "D"}).raise_for_status()
        client.post("/api/v1/workspaces", json={"id": "team-e", "name": "E"}).raise_for_status()
    dora = server.user("dora-d", "admin", workspace="team-d")
    assert server.register("dan-d", token=admin).status_code == 201
    with server.client(dora) as client:
        assert client.put("/api/v1/workspaces/team-e/members/dan-d", json={"role": "viewer"}).status_code == 403
        given = client.put("/api/v1/workspaces/team-d/members/dan-d", json={"role": "editor"})
        assert given.status_code == 200, given.text
        assert status_of(server, server.login("dan-d"), "PUT", "/api/v1/w/team-d/kv/ns/by-dan") == 200
        assert client.delete("/api/v1/workspaces/team-d/members/dan-d").status_code == 204


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "bearer a b", "Token x", "Bearer fm_0123456789abcdef_nope"])
def test_malformed_authorization_headers_are_401(server: FlowmillServer, header: str) -> None:
    with server.client() as client:
        assert client.get("/api/v1/kv/ns", headers={"Authorization": header}).status_code == 401
