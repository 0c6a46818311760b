"""Issue 12, items 1, 3 and 6, as an attacker tries them, through the HTTP API and real runs:
references in a run's arguments resolve only with the rights of whoever wrote them; a run acts
as whoever last changed what started it, with that user's real role, and its token never mints
anything that outlives it; roles hold on every path into a run."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import sqlite3
import time
import urllib.parse

import httpx
import pytest

from tests.support import PG_URL, FlowmillServer, wait_for

SECRET = "s3cr3t-value-never-shown"
CRED = "cr3d-value-never-shown"
PLAIN = "plain-value"
FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}

ECHO = "def main(**args):\n    return args\n"
# What a run was given, without the values themselves: a digest of each argument.
DIGESTS = '''
import hashlib
import json

def main(**args):
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest() for k, v in args.items()}
'''
PRE = "def preprocessor(event):\n    return {'event': event}\n\ndef main(event: dict):\n    return event\n"
WHO = '''
import hashlib
import os
import wmill

def main():
    try:
        read = hashlib.sha256(wmill.get_variable("f/x/secret").encode()).hexdigest() == "%s"
    except Exception as error:
        read = "refused: " + str(error)[:200]
    return {"me": wmill.whoami()["username"], "role": wmill.whoami()["role"], "env": os.environ["WM_USERNAME"],
            "secret_read": read}
''' % hashlib.sha256(SECRET.encode()).hexdigest()
# A run that tries to make something that outlives it, with its own token.
ESCALATE = '''
import os
import httpx
import wmill

def main():
    base, token = os.environ["WM_BASE_URL"], os.environ["WM_TOKEN"]
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer " + token}, timeout=20) as api:
        native = api.post("/api/v1/tokens", json={"label": "forever"})
        return {
            "wmill_token": wmill.Windmill().create_token(),
            "own_token": token,
            "native": [native.status_code, native.json().get("token"), native.json().get("expiresAt")],
            "register": api.post("/auth/register", json={"username": "planted", "password": "password-1234",
                                                          "role": "admin"}).status_code,
            "member": api.put("/api/v1/workspaces/main/members/sec-viewer", json={"role": "admin"}).status_code,
            "workspace": api.post("/api/v1/workspaces", json={"id": "planted", "name": "planted"}).status_code,
            "settings": api.put("/api/v1/settings", json={"routeWorkspacePrefix": True}).status_code,
            # A route or trigger runs as whoever last changed it: made by a run, it would act
            # as the run's identity once the run is over.
            "route": api.post("/api/v1/routes", json={"path": "planted/route", "runnable": {"kind": "script", "path": "f/sec/echo"}}).status_code,
            "trigger": api.post("/api/v1/triggers", json={"kind": "webhook", "key": "planted-hook",
                                                          "runnable": {"kind": "script", "path": "f/sec/echo"}}).status_code,
            "whoami": api.get("/api/w/main/users/whoami").json()["role"],
        }
'''


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        for path, content in {"f/sec/echo": ECHO, "f/sec/digests": DIGESTS, "f/sec/pre": PRE, "f/sec/who": WHO,
                              "f/sec/escalate": ESCALATE}.items():
            assert client.post("/api/v1/scripts", json={"path": path, "content": content}).status_code in (200, 201)
        assert client.post("/api/v1/scripts", json={"path": "f/sec/cached", "content": DIGESTS, "cacheTtl": 600}).status_code in (200, 201)
        client.post("/api/v1/variables", json={"path": "f/x/secret", "value": SECRET, "isSecret": True}).raise_for_status()
        client.post("/api/v1/variables", json={"path": "f/x/plain", "value": PLAIN}).raise_for_status()
        client.post("/api/v1/resources", json={"path": "f/x/db", "resourceType": "postgresql", "value": {
            "host": "db", "user": "app", "dbname": "x", "password": "$var:f/x/secret"}}).raise_for_status()
        client.post("/api/v1/resources", json={"path": "f/x/dangling", "resourceType": "postgresql", "value": {
            "host": "db", "password": "$var:f/x/no_such_variable"}}).raise_for_status()
        client.post("/api/v1/credentials", json={"name": "API_CRED", "value": CRED}).raise_for_status()
        yield client


@pytest.fixture(scope="module")
def tokens(server: FlowmillServer, api: httpx.Client) -> dict[str, str]:
    return {role: server.user(f"sec-{role}", role) for role in ("viewer", "executor", "editor")}


def route(api: httpx.Client, path: str, script: str = "f/sec/echo", **fields: object) -> dict[str, object]:
    body = {"path": path, "method": "POST", "runnable": {"kind": "script", "path": script}, "requestType": "sync", **fields}
    response = api.post("/api/v1/routes", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def wait_job(api: httpx.Client, job_id: str) -> dict[str, object]:
    return wait_for(lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["status"] in FINAL and j, 30, "the run")


def no_secret_in(server: FlowmillServer, *texts: str) -> None:
    for text in (*texts, server.dump()):
        assert SECRET not in text and CRED not in text


# -- 1. outside input is data ---------------------------------------------------------------------------


REFERENCES = {
    "a": "$var:f/x/secret", "r": "$res:f/x/db", "c": "$cred:API_CRED",
    "nested": {"list": ["$var:f/x/secret", {"deeper": "$res:f/x/db"}], "p": "$var:f/x/plain"},
}


def test_an_anonymous_route_gets_references_as_text(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "open/echo")
    route(api, "open/echo/:p")
    url = f"{server.url}/api/r/open/echo"
    answer = httpx.post(url, json=REFERENCES)  # a JSON body, nested in lists and objects
    assert answer.status_code == 200, answer.text
    assert answer.json() == REFERENCES
    query = httpx.post(url + "?q=" + urllib.parse.quote("$var:f/x/secret"), json={})
    assert query.json() == {"q": "$var:f/x/secret"}
    form = httpx.post(url, data={"f": "$var:f/x/secret", "g": "$cred:API_CRED"})
    assert form.json() == {"f": "$var:f/x/secret", "g": "$cred:API_CRED"}
    text = httpx.post(url, content=b"$var:f/x/secret", headers={"Content-Type": "text/plain"})
    assert text.json() == {"body": "$var:f/x/secret"}
    param = httpx.post(url + "/" + urllib.parse.quote("$var:f"), json={"x": "$var:f/x/plain"})
    assert param.json() == {"p": "$var:f", "x": "$var:f/x/plain"}
    job = api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["args"] == REFERENCES and job["result"] == REFERENCES and job["status"] == "SUCCESS"
    no_secret_in(server, answer.text, query.text, form.text, text.text, json.dumps(job))


def test_async_routes_preprocessors_and_webhooks_get_references_as_text(server: FlowmillServer, api: httpx.Client) -> None:
    route(api, "open/later", requestType="async")
    route(api, "open/pre", "f/sec/pre")
    later = httpx.post(f"{server.url}/api/r/open/later", json=REFERENCES)
    assert later.status_code == 202
    assert wait_job(api, later.json()["jobId"])["result"] == REFERENCES
    pre = httpx.post(f"{server.url}/api/r/open/pre?q=%24var%3Af%2Fx%2Fsecret", json=REFERENCES,
                     headers={"X-Ref": "$var:f/x/secret"})
    assert pre.status_code == 200, pre.text
    event = pre.json()
    assert event["body"] == REFERENCES and event["query"] == {"q": "$var:f/x/secret"}
    assert event["headers"]["x-ref"] == "$var:f/x/secret"
    hook = api.post("/api/v1/triggers", json={"kind": "webhook", "key": "sec-hook", "runnable": {"kind": "script", "path": "f/sec/echo"}})
    assert hook.status_code == 201, hook.text
    fired = httpx.post(f"{server.url}/api/v1/webhook/sec-hook", json=REFERENCES)
    assert fired.status_code == 202
    assert wait_job(api, fired.json()["jobId"])["result"] == REFERENCES
    form = httpx.post(f"{server.url}/api/v1/webhook/sec-hook", data={"f": "$var:f/x/secret"})
    assert wait_job(api, form.json()["jobId"])["result"] == {"f": "$var:f/x/secret"}
    no_secret_in(server, pre.text)


def test_a_cached_result_of_references_is_not_given_for_text(server: FlowmillServer, api: httpx.Client) -> None:
    resolved = api.post("/api/v1/jobs/run_wait_result/p/f/sec/cached", json={"a": "$var:f/x/secret"})
    assert resolved.status_code == 200 and resolved.json() == {"a": digest(SECRET)}
    route(api, "open/cached", "f/sec/cached")
    literal = httpx.post(f"{server.url}/api/r/open/cached", json={"a": "$var:f/x/secret"})
    assert literal.json() == {"a": digest("$var:f/x/secret")}


# -- 1. references written by an authenticated caller --------------------------------------------------------


def test_run_apis_resolve_references_with_the_callers_rights(server: FlowmillServer, api: httpx.Client,
                                                             tokens: dict[str, str]) -> None:
    expected = {"a": digest(SECRET), "r": digest({"host": "db", "user": "app", "dbname": "x", "password": SECRET}),
                "c": digest(CRED), "nested": digest({"list": [SECRET, {"deeper": {"host": "db", "user": "app", "dbname": "x",
                                                                                   "password": SECRET}}], "p": PLAIN})}
    with server.client(tokens["executor"]) as executor:
        native = executor.post("/api/v1/jobs/run_wait_result/p/f/sec/digests", json=REFERENCES)
        assert native.status_code == 200, native.text
        assert native.json() == expected
        windmill = executor.post("/api/w/main/jobs/run_wait_result/p/f/sec/digests", json=REFERENCES)
        assert windmill.status_code == 200 and windmill.json() == expected
        queued = executor.post("/api/w/main/jobs/run/p/f/sec/digests", json=REFERENCES)
        assert queued.status_code == 201
        assert wait_job(api, queued.text)["result"] == expected
        native_async = executor.post("/api/v1/jobs/run/p/f/sec/digests", json=REFERENCES)
        job = wait_job(api, native_async.json()["id"])
        assert job["result"] == expected and job["createdBy"] == "sec-executor"
        assert job["args"] == REFERENCES  # stored as given: the references, never their values
    no_secret_in(server, native.text, windmill.text, json.dumps(job))


def test_an_unreadable_reference_is_a_400_and_no_run(server: FlowmillServer, api: httpx.Client, tokens: dict[str, str]) -> None:
    before = server.count("job")
    with server.client(tokens["executor"]) as executor:
        for url in ("/api/v1/jobs/run_wait_result/p/f/sec/digests", "/api/v1/jobs/run/p/f/sec/digests",
                    "/api/w/main/jobs/run_wait_result/p/f/sec/digests", "/api/w/main/jobs/run/p/f/sec/digests"):
            for argument, reference in (("a", "$var:f/x/no_such_variable"), ("b", "$res:f/x/dangling"),
                                        ("c", "$cred:NO_SUCH"), ("d", "$res:f/nowhere/at_all")):
                answer = executor.post(url, json={argument: {"in": [reference]}})
                assert answer.status_code == 400, (url, answer.text)
                assert answer.json()["error"]["message"] == f"the argument {argument} references {reference} which cannot be read"
    with server.client(tokens["viewer"]) as viewer:  # running needs the executor role
        for url in ("/api/v1/jobs/run_wait_result/p/f/sec/digests", "/api/w/main/jobs/run_wait_result/p/f/sec/digests",
                    "/api/w/main/jobs/run/p/f/sec/digests"):
            assert viewer.post(url, json={"a": "$var:f/x/secret"}).status_code == 403
    assert server.count("job") == before


def test_a_resource_that_references_a_secret_needs_the_executor_role(server: FlowmillServer, tokens: dict[str, str]) -> None:
    with server.client(tokens["viewer"]) as viewer:
        refused = viewer.get("/api/v1/resources/value/f/x/db")
        assert refused.status_code == 403 and SECRET not in refused.text
        assert viewer.get("/api/w/main/resources/get_value_interpolated/f/x/db").status_code == 403
        assert viewer.get("/api/v1/resources/value/f/x/db", params={"interpolate": "false"}).json()["password"] == "$var:f/x/secret"
    with server.client(tokens["executor"]) as executor:
        assert executor.get("/api/v1/resources/value/f/x/db").json()["password"] == SECRET


def test_schedule_arguments_resolve_as_its_editor_and_fail_cleanly(server: FlowmillServer, api: httpx.Client,
                                                                 tokens: dict[str, str]) -> None:
    with server.client(tokens["editor"]) as editor:
        good = editor.post("/api/v1/triggers", json={"kind": "schedule", "cron": "* * * * * *", "catchUp": "none",
                                                      "runnable": {"kind": "script", "path": "f/sec/digests"},
                                                      "args": {"a": "$var:f/x/secret", "c": ["$cred:API_CRED"]}})
        bad = editor.post("/api/v1/triggers", json={"kind": "schedule", "cron": "* * * * * *", "catchUp": "none",
                                                     "runnable": {"kind": "script", "path": "f/sec/digests"},
                                                     "args": {"a": "$var:f/x/no_such_variable"}})
        assert good.status_code == bad.status_code == 201, (good.text, bad.text)
        assert good.json()["runAs"] == "sec-editor"

        def first_run(trigger_id: str) -> dict[str, object] | None:
            page = api.get("/api/v1/jobs", params={"trigger": "schedule"}).json()["items"]
            done = [j for j in page if j["trigger"]["detail"] == trigger_id and j["status"] in FINAL]
            return done[0] if done else None

        ok = wait_for(lambda: first_run(good.json()["id"]), 30, "a tick of the schedule")
        failed = wait_for(lambda: first_run(bad.json()["id"]), 30, "a tick of the schedule")
        for made in (good, bad):
            editor.put(f"/api/v1/triggers/{made.json()['id']}", json={
                "kind": "schedule", "cron": "* * * * * *", "runnable": {"kind": "script", "path": "f/sec/digests"},
                "enabled": False}).raise_for_status()
    assert ok["status"] == "SUCCESS" and ok["result"] == {"a": digest(SECRET), "c": digest([CRED])}, ok
    assert ok["createdBy"] == "sec-editor" and ok["args"] == {"a": "$var:f/x/secret", "c": ["$cred:API_CRED"]}
    assert failed["status"] == "FAILED"
    assert failed["error"]["message"] == "the argument a references $var:f/x/no_such_variable which cannot be read"


# -- 2. a run acts as whoever last changed what started it --------------------------------------------------


def test_an_editor_repointing_an_admins_route_runs_as_the_editor(server: FlowmillServer, api: httpx.Client) -> None:
    editor_token = server.user("sec-repointer", "editor")
    made = route(api, "admin/owned", "f/sec/echo")
    assert made["createdBy"] == "admin" and made["runAs"] == "admin"
    with server.client(editor_token) as editor:
        mint = '''
import os
import wmill

def main():
    return {"me": wmill.whoami()["username"], "token": wmill.Windmill().create_token(), "own": os.environ["WM_TOKEN"]}
'''
        assert editor.post("/api/v1/scripts", json={"path": "f/sec/mint", "content": mint}).status_code in (200, 201)
        changed = editor.put(f"/api/v1/routes/{made['id']}", json={
            "method": "POST", "runnable": {"kind": "script", "path": "f/sec/mint"}, "requestType": "sync"})
        assert changed.status_code == 200, changed.text
    view = api.get(f"/api/v1/routes/{made['id']}").json()
    assert view["createdBy"] == "admin" and view["updatedBy"] == "sec-repointer" and view["runAs"] == "sec-repointer"
    answer = httpx.post(f"{server.url}/api/r/admin/owned", json={})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["me"] == "sec-repointer"
    assert api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()["createdBy"] == "sec-repointer"
    minted = result["token"]
    assert not minted.startswith("fm_")  # never a permanent API token
    assert claims(minted)["sub"] == "sec-repointer" and claims(minted)["job"] == answer.headers["x-job-id"]
    assert claims(minted)["exp"] <= claims(result["own"])["exp"]
    assert server.count("api_token", "username = $1", "sec-repointer") == 0
    with server.client(minted) as after:  # the run is over: so is every token it had
        assert after.get("/api/w/main/users/whoami").status_code == 401
        assert after.get("/api/v1/jobs").status_code == 401


def test_a_run_token_cannot_mint_or_plant_anything_that_outlives_the_run(server: FlowmillServer, api: httpx.Client) -> None:
    answer = api.post("/api/v1/jobs/run_wait_result/p/f/sec/escalate", json={})  # as the instance admin
    assert answer.status_code == 200, answer.text
    result = answer.json()
    for planted in ("register", "member", "workspace", "settings", "route", "trigger"):
        assert result[planted] == 403, result
    assert result["whoami"] == "admin"  # the identity's own rights, no more
    status, native, expires = result["native"]
    assert status == 201 and not native.startswith("fm_") and not result["wmill_token"].startswith("fm_")
    for token in (native, result["wmill_token"]):
        assert claims(token)["job"] == answer.headers["x-job-id"] and claims(token)["exp"] <= claims(result["own_token"])["exp"]
        with server.client(token) as after:
            assert after.get("/api/v1/jobs").status_code == 401
    assert expires <= claims(result["own_token"])["exp"] * 1000
    assert server.count("app_user", "username = $1", "planted") == 0
    assert server.count("workspace", "id = $1", "planted") == 0
    assert server.count("route", "path = $1", "planted/route") == server.count("run_trigger", "key = $1", "planted-hook") == 0
    assert server.count("api_token", "label = $1", "forever") == 0
    assert api.get("/api/v1/settings").json()["routeWorkspacePrefix"] is False


def test_a_runs_role_is_looked_up_when_it_starts(server: FlowmillServer, api: httpx.Client) -> None:
    demoted = server.user("sec-demoted", "editor")
    removed = server.user("sec-removed", "editor")
    ids = {}
    for username, token in (("sec-demoted", demoted), ("sec-removed", removed)):
        made = route(api, f"{username}/who", "f/sec/echo")
        with server.client(token) as editor:
            assert editor.put(f"/api/v1/routes/{made['id']}", json={
                "method": "POST", "runnable": {"kind": "script", "path": "f/sec/who"}, "requestType": "sync"}).status_code == 200
        ids[username] = made["id"]
    api.put("/api/v1/workspaces/main/members/sec-demoted", json={"role": "viewer"}).raise_for_status()
    api.delete("/api/v1/workspaces/main/members/sec-removed").raise_for_status()
    as_viewer = httpx.post(f"{server.url}/api/r/sec-demoted/who", json={})
    assert as_viewer.status_code == 200, as_viewer.text
    assert as_viewer.json()["role"] == "viewer" and as_viewer.json()["me"] == "sec-demoted"
    assert as_viewer.json()["secret_read"].startswith("refused") and "403" in as_viewer.json()["secret_read"]
    gone = httpx.post(f"{server.url}/api/r/sec-removed/who", json={})
    assert gone.status_code == 422
    error = gone.json()["error"]["details"]["error"]
    assert error["name"] == "NotAMember" and "sec-removed" in error["message"]


# -- 3. roles on every path into a run ------------------------------------------------------------------------


def test_a_viewer_cannot_run_through_a_jwt_route(server: FlowmillServer, api: httpx.Client, tokens: dict[str, str]) -> None:
    route(api, "members/only", auth={"kind": "jwt"})
    url = f"{server.url}/api/r/members/only"
    before = server.count("job")
    refused = httpx.post(url, json={"a": 1}, headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert refused.status_code == 403
    assert server.count("job") == before
    answer = httpx.post(url, json={"a": "$var:f/x/secret"}, headers={"Authorization": f"Bearer {tokens['executor']}"})
    assert answer.status_code == 200 and answer.json() == {"a": "$var:f/x/secret"}  # the body is data here too
    assert api.get(f"/api/v1/jobs/{answer.headers['x-job-id']}").json()["createdBy"] == "sec-executor"


def test_webhook_keys_are_shown_to_editors_only(server: FlowmillServer, tokens: dict[str, str]) -> None:
    with server.client(tokens["editor"]) as editor:
        made = editor.post("/api/v1/triggers", json={"kind": "webhook", "key": "sec-hidden-key-1234",
                                                      "secret": "sec-hook-secret-5678",
                                                      "runnable": {"kind": "script", "path": "f/sec/echo"}})
        assert made.status_code == 201 and made.json()["key"] == "sec-hidden-key-1234"
        assert made.json()["runAs"] == "sec-editor" and "sec-hook-secret-5678" not in made.text
        assert editor.get(f"/api/v1/triggers/{made.json()['id']}").json()["key"] == "sec-hidden-key-1234"
    for role in ("viewer", "executor"):
        with server.client(tokens[role]) as reader:
            listed = reader.get("/api/v1/triggers")
            one = reader.get(f"/api/v1/triggers/{made.json()['id']}")
            exported = reader.post("/api/v1/routes/openapi/export", json={"format": "json"})
            assert listed.status_code == one.status_code == exported.status_code == 200
            for text in (listed.text, one.text, exported.text):
                assert "sec-hidden-key-1234" not in text and "sec-hook-secret-5678" not in text, (role, text)
            assert "key" not in one.json() and "url" not in one.json() and one.json()["hasSecret"] is True


def test_route_views_hide_auth_secrets_from_everyone(server: FlowmillServer, api: httpx.Client, tokens: dict[str, str]) -> None:
    made = [
        route(api, "hidden/hmac", auth={"kind": "hmac", "preset": "github", "secret": "sec-hmac-secret-1"}),
        route(api, "hidden/key", auth={"kind": "api_key", "header": "X-Key", "key": "sec-api-key-2"}),
        route(api, "hidden/basic", auth={"kind": "basic", "username": "u", "password": "sec-basic-pw-3"}),
    ]
    for token in (server.admin_token(), *tokens.values()):
        with server.client(token) as reader:
            texts = [reader.get("/api/v1/routes").text, *(reader.get(f"/api/v1/routes/{r['id']}").text for r in made),
                     reader.post("/api/v1/routes/openapi/export", json={"format": "json"}).text]
            for text in texts:
                for secret in ("sec-hmac-secret-1", "sec-api-key-2", "sec-basic-pw-3"):
                    assert secret not in text


def test_custom_auth_checks_are_capped_and_run_as_the_route(server: FlowmillServer, api: httpx.Client) -> None:
    check = '''
import os
import time

def main(event: dict):
    time.sleep(float(event["query"].get("sleep", "0")))
    return os.environ["WM_USERNAME"] == "admin" and event["body"].get("x") == "$var:f/x/secret"
'''
    assert api.post("/api/v1/scripts", json={"path": "f/sec/check", "content": check}).status_code in (200, 201)
    route(api, "guarded/custom", auth={"kind": "custom", "script": "f/sec/check"})
    url = f"{server.url}/api/r/guarded/custom"
    answer = httpx.post(url, json={"x": "$var:f/x/secret"})  # the event is data: the check sees the text
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"x": "$var:f/x/secret"}
    before = server.count("job")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        burst = list(pool.map(lambda _: httpx.post(url + "?sleep=3", json={"x": "$var:f/x/secret"}, timeout=60), range(12)))
    statuses = [r.status_code for r in burst]
    assert set(statuses) <= {200, 503}, statuses
    assert 1 <= statuses.count(200) <= 8 and statuses.count(503) >= 4, statuses  # at most 4 checks at once
    assert all(r.headers.get("retry-after") for r in burst if r.status_code == 503)
    assert server.count("job") == before + statuses.count(200)
    assert time.monotonic() - started < 30


def test_a_webhook_changed_by_another_editor_runs_as_them(server: FlowmillServer, api: httpx.Client,
                                                          tokens: dict[str, str]) -> None:
    made = api.post("/api/v1/triggers", json={"kind": "webhook", "key": "sec-owned-hook",
                                               "runnable": {"kind": "script", "path": "f/sec/echo"}}).json()
    assert made["createdBy"] == made["updatedBy"] == made["runAs"] == "admin"
    with server.client(tokens["editor"]) as editor:
        changed = editor.put(f"/api/v1/triggers/{made['id']}", json={
            "kind": "webhook", "runnable": {"kind": "script", "path": "f/sec/who"}})
        assert changed.status_code == 200, changed.text
    view = api.get(f"/api/v1/triggers/{made['id']}").json()
    assert view["createdBy"] == "admin" and view["updatedBy"] == view["runAs"] == "sec-editor"
    fired = httpx.post(f"{server.url}/api/v1/webhook/sec-owned-hook", json={})
    job = wait_job(api, fired.json()["jobId"])
    assert job["createdBy"] == "sec-editor" and job["result"]["me"] == "sec-editor" and job["result"]["role"] == "editor"


def _write(server: FlowmillServer, *statements: str) -> None:
    """Change the server's database behind its back (it is stopped)."""
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.home / "flowmill.db")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": server.schema or "public"})
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_triggers_made_before_run_as_existed_run_as_their_creator(fresh_server: FlowmillServer) -> None:
    fresh_server.start()
    with fresh_server.client(fresh_server.admin_token()) as admin:
        assert admin.post("/api/v1/scripts", json={"path": "f/sec/echo", "content": ECHO}).status_code in (200, 201)
        made = admin.post("/api/v1/triggers", json={"kind": "webhook", "key": "old-hook",
                                                     "runnable": {"kind": "script", "path": "f/sec/echo"}}).json()
    fresh_server.stop()
    # As the database was before the migration that fills `updated_by` ran.
    _write(fresh_server, "UPDATE run_trigger SET updated_by = ''",
           "DELETE FROM migration WHERE name = '2026-12-02T10:00:01:000000'")
    fresh_server.start()
    with fresh_server.client(fresh_server.admin_token()) as admin:
        assert admin.get(f"/api/v1/triggers/{made['id']}").json()["runAs"] == "admin"
        fired = httpx.post(f"{fresh_server.url}/api/v1/webhook/old-hook", json={"n": 1})
        job = wait_job(admin, fired.json()["jobId"])
        assert job["status"] == "SUCCESS" and job["createdBy"] == "admin"


# An admin-only call from inside a run: resource types are created by admins.
ADMIN_CALL = '''
import os
import httpx

def main():
    with httpx.Client(base_url=os.environ["WM_BASE_URL"], headers={"Authorization": "Bearer " + os.environ["WM_TOKEN"]}) as api:
        made = api.post("/api/v1/resource_types", json={"name": "t_%s", "schema": {"type": "object"}})
    return {"status": made.status_code, "role": __import__("wmill").whoami()["role"]}
'''


def test_an_editor_changing_the_script_behind_an_admins_route_gets_no_admin_role(server: FlowmillServer, api: httpx.Client) -> None:
    assert api.post("/api/v1/scripts", json={"path": "f/sec/tool", "content": ADMIN_CALL % "by_admin"}).status_code in (200, 201)
    route(api, "admin/tool", "f/sec/tool")
    by_admin = httpx.post(f"{server.url}/api/r/admin/tool", json={})
    assert by_admin.json() == {"status": 201, "role": "admin"}, by_admin.text  # the admin's own script may
    editor_token = server.user("sec-script-editor", "editor")
    with server.client(editor_token) as editor:
        # The route still runs as the admin, who last changed it; the script is now the editor's.
        assert editor.post("/api/v1/scripts", json={"path": "f/sec/tool", "content": ADMIN_CALL % "by_editor"}).status_code in (200, 201)
        relay = "import wmill\ndef main():\n    return wmill.run_script_by_path('f/sec/admintool', args={})\n"
        assert editor.post("/api/v1/scripts", json={"path": "f/sec/relay", "content": relay}).status_code in (200, 201)
    answer = httpx.post(f"{server.url}/api/r/admin/tool", json={})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": 403, "role": "editor"}
    # Nor through a script of the admin's that the editor's run starts: its runs hold no more.
    assert api.post("/api/v1/scripts", json={"path": "f/sec/admintool", "content": ADMIN_CALL % "relayed"}).status_code in (200, 201)
    route(api, "admin/relay", "f/sec/relay")
    relayed = httpx.post(f"{server.url}/api/r/admin/relay", json={})
    assert relayed.status_code == 200, relayed.text
    assert relayed.json() == {"status": 403, "role": "editor"}
    names = {t["name"] for t in api.get("/api/v1/resource_types").json()}
    assert "t_by_admin" in names and "t_by_editor" not in names and "t_relayed" not in names
