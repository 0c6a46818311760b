"""Credentials and secret variables used by scripts: `$cred:` in arguments and resources, the
`flowmill` SDK inside a run, and the masking of every secret a run is given."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.api.test_credentials import assert_nowhere
from tests.support import FlowmillServer


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> str:
    return server.admin_token()


def save(client, path: str, content: str) -> None:  # type: ignore[no-untyped-def]
    answer = client.post("/api/v1/scripts", json={"path": path, "content": content})
    assert answer.status_code in (200, 201), answer.text


def run(client, path: str, args: dict | None = None) -> tuple[int, object, str]:  # type: ignore[no-untyped-def,type-arg]
    """(status, body, the run's whole log) of a synchronous run."""
    answer = client.post(f"/api/v1/jobs/run_wait_result/p/{path}", json=args or {})
    job_id = client.get("/api/v1/jobs", params={"limit": 1, "path": path}).json()["items"][0]["id"]
    log = "\n".join(line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json())
    return answer.status_code, answer.json(), log


def test_the_sdk_gives_a_run_a_credential_masked_in_its_log_and_result(server: FlowmillServer, admin: str) -> None:
    value = "sdk-" + secrets.token_hex(12)
    with server.client(admin) as client:
        assert client.post("/api/v1/credentials", json={"name": "SDK_TOKEN", "value": value}).status_code == 201
        save(client, "f/secrets/sdk", (
            "import flowmill\n"
            "def main():\n"
            "    token = flowmill.get_credential('SDK_TOKEN')\n"
            "    print('the token is', token)\n"
            "    return {'length': len(token), 'echo': token, 'prefix': token[:4], 'inside': 'x' + token + 'y'}\n"
        ))
        status, body, log = run(client, "f/secrets/sdk")
        assert status == 200, body
        assert body == {"length": len(value), "echo": "***", "prefix": "sdk-", "inside": "x***y"}
        assert "the token is ***" in log and value not in log
        reads = client.get("/api/v1/audit", params={"action": "credential.read"}).json()["items"]
        assert reads and reads[0]["target"] == "credential:SDK_TOKEN" and reads[0]["actor"] == "admin"
    assert_nowhere(server, value, [log])


def test_a_credential_value_is_given_to_runs_only(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "ONLY_RUNS", "value": "never-to-people"})
        refused = client.get("/api/v1/credentials/value/ONLY_RUNS")
        assert refused.status_code == 403 and "only to runs" in refused.json()["error"]["message"]
        assert "never-to-people" not in refused.text
        save(client, "f/secrets/missing", "import flowmill\ndef main():\n    return flowmill.get_credential('NO_SUCH')\n")
        status, body, _ = run(client, "f/secrets/missing")
        assert status == 422 and "no credential named NO_SUCH" in body["error"]["details"]["error"]["message"]
    viewer = server.user("cred-viewer", "viewer")
    with server.client(viewer) as client:
        assert client.get("/api/v1/credentials/value/ONLY_RUNS").status_code == 403


def test_a_run_capped_at_viewer_cannot_read_a_credential(server: FlowmillServer, admin: str) -> None:
    """A run holds no more than its script's author: the script of an editor since made a
    viewer gets no credential, even when an admin runs it."""
    author = server.user("cred-author", "editor")
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "CAPPED", "value": "capped-secret-value"})
    with server.client(author) as client:
        save(client, "f/secrets/capped", (
            "import flowmill\n"
            "def main():\n"
            "    try:\n"
            "        return {'length': len(flowmill.get_credential('CAPPED'))}\n"
            "    except flowmill.FlowmillError as error:\n"
            "        return {'status': error.status}\n"
        ))
    with server.client(admin) as client:
        status, body, _ = run(client, "f/secrets/capped")
        assert status == 200 and body == {"length": 19}  # the editor's script may read it
        member = client.put("/api/v1/workspaces/main/members/cred-author", json={"role": "viewer"})
        assert member.status_code in (200, 201, 204), member.text
        status, body, _ = run(client, "f/secrets/capped")
        assert status == 200 and body == {"status": 403}


def test_cred_references_in_arguments_and_resources_are_masked(server: FlowmillServer, admin: str) -> None:
    value = "ref-" + secrets.token_hex(12)
    variable = "var-" + secrets.token_hex(12)
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "REF_TOKEN", "value": value})
        assert client.post("/api/v1/variables", json={"path": "f/secrets/pw", "value": variable, "isSecret": True}).status_code == 201
        created = client.post("/api/v1/resources", json={
            "path": "f/secrets/api", "resourceType": "http_bearer", "value": {"token": "$cred:REF_TOKEN", "password": "$var:f/secrets/pw"},
        })
        assert created.status_code == 201, created.text
        save(client, "f/secrets/args", (
            "import wmill\n"
            "def main(token: str, api: dict):\n"
            "    print('arg', token, 'resource', api['token'], api['password'])\n"
            "    print('again', wmill.get_resource('f/secrets/api')['token'], wmill.get_variable('f/secrets/pw'))\n"
            "    return [token, api, len(token)]\n"
        ))
        status, body, log = run(client, "f/secrets/args", {"token": "$cred:REF_TOKEN", "api": "$res:f/secrets/api"})
        assert status == 200, body
        assert body == ["***", {"token": "***", "password": "***"}, len(value)]
        assert "arg *** resource *** ***" in log and "again *** ***" in log
        assert value not in log and variable not in log
        job = client.get("/api/v1/jobs", params={"limit": 1, "path": "f/secrets/args"}).json()["items"][0]
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["args"] == {"token": "$cred:REF_TOKEN", "api": "$res:f/secrets/api"}
    assert_nowhere(server, value, [log])


def test_a_failed_run_masks_its_secret_in_the_error(server: FlowmillServer, admin: str) -> None:
    value = "err-" + secrets.token_hex(12)
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "ERR_TOKEN", "value": value})
        save(client, "f/secrets/fails", "def main(token: str):\n    raise ValueError('bad token ' + token)\n")
        answer = client.post("/api/v1/jobs/run_wait_result/p/f/secrets/fails", json={"token": "$cred:ERR_TOKEN"})
        assert answer.status_code == 422
        error = answer.json()["error"]["details"]["error"]
        assert error["message"] == "bad token ***" and value not in answer.text
        job = client.get(f"/api/v1/jobs/{answer.json()['error']['details']['jobId']}").json()
        assert value not in str(job)


def test_short_values_are_not_masked(server: FlowmillServer, admin: str) -> None:
    """A secret of fewer than 4 characters is not masked: masking every `ab` would hide the log."""
    with server.client(admin) as client:
        client.post("/api/v1/credentials", json={"name": "SHORT", "value": "ab"})
        save(client, "f/secrets/short", "def main(s: str):\n    print('about', s)\n    return s\n")
        status, body, log = run(client, "f/secrets/short", {"s": "$cred:SHORT"})
        assert status == 200 and body == "ab" and "about ab" in log


def test_the_audit_entry_records_the_status_answered(server: FlowmillServer, admin: str) -> None:
    with server.client(admin) as client:
        name = f"AUDITED_{int(time.time() * 1000)}"
        created = client.post("/api/v1/credentials", json={"name": name, "value": "x"})
        assert created.status_code == 201
        assert client.delete(f"/api/v1/credentials/{created.json()['id']}").status_code == 204
        entries = [e for e in client.get("/api/v1/audit", params={"limit": 50}).json()["items"] if e["target"] == f"credential:{name}"]
        assert sorted((e["action"], e["status"]) for e in entries) == [("credential.create", 201), ("credential.delete", 204)]
        assert client.put("/api/v1/kv/audit-status/k", json=1).status_code == 200
        kv = [e for e in client.get("/api/v1/audit", params={"action": "kv.put"}).json()["items"] if e["target"] == "kv:audit-status/k"]
        assert kv[0]["status"] == 200
