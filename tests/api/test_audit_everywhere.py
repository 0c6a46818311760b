"""Every mutating operation of the OpenAPI document, called successfully, leaves exactly one audit
entry: its action, the status it answered, outcome `success`, found by its request id. A run is
recorded by its own job row instead; a read with a body changes nothing; what cannot succeed yet
is called and answers its known refusal. A viewer refused any of them leaves one `denied` entry.

A new mutating endpoint fails `test_every_mutating_operation_is_listed` until it is added here."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support import PASSWORD, FlowmillServer, wait_for

SCRIPT = "def main(n: int = 1):\n    return {'n': n}\n"
SLEEPER = "import flowmill\ndef main():\n    flowmill.sleep(600)\n"
WAITER = "from flowmill import workflow, wait_for_event\n@workflow\ndef main():\n    return wait_for_event('go')\n"
OTHER = "audit-ws"  # the second workspace: every /api/v1/w/{workspace}/... and /api/w/{workspace}/... call goes there
SPEC = json.dumps({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
                   "paths": {"/pets": {"get": {"summary": "list pets"}}}})
numbers = itertools.count(1)

# (method, URL, httpx keyword arguments): the one request whose audit entry is looked for.
Request = tuple[str, str, dict[str, Any]]
# Makes what the request needs (with calls of its own, not looked for) and returns the request,
# for a workspace: "main" for /api/v1/... and the instance-wide operations, else OTHER.
Prepare = Callable[[httpx.Client, str], Request]


@dataclass(frozen=True)
class Change:
    action: str  # the handler's opt["audit"]
    prepare: Prepare


def v1(workspace: str) -> str:
    return "/api/v1" if workspace == "main" else f"/api/v1/w/{workspace}"


def wm(workspace: str) -> str:
    return f"/api/w/{workspace}"


def _n() -> int:
    return next(numbers)


def _made(c: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    made = c.request(method, url, **kwargs)
    assert made.status_code in (200, 201), (method, url, made.status_code, made.text)
    return made


def _script(c: httpx.Client, w: str) -> dict[str, Any]:
    path = f"f/audit/s{_n()}"
    return {"path": path, **_made(c, "POST", f"{v1(w)}/scripts", json={"path": path, "content": SCRIPT}).json()}


def _kv(c: httpx.Client, w: str) -> str:
    key = f"k{_n()}"
    _made(c, "PUT", f"{v1(w)}/kv/audit/{key}", json=1)
    return key


def _credential(c: httpx.Client, w: str) -> str:
    return _made(c, "POST", f"{v1(w)}/credentials", json={"name": f"C{_n()}", "value": "v-123456"}).json()["id"]


def _variable(c: httpx.Client, w: str) -> str:
    return _made(c, "POST", f"{v1(w)}/variables", json={"path": f"f/audit/v{_n()}", "value": "x"}).json()["path"]


def _resource(c: httpx.Client, w: str) -> str:
    body = {"path": f"f/audit/r{_n()}", "resourceType": "http_bearer", "value": {"token": "t"}}
    return _made(c, "POST", f"{v1(w)}/resources", json=body).json()["path"]


def _resource_type(c: httpx.Client, w: str) -> str:
    return _made(c, "POST", f"{v1(w)}/resource_types", json={"name": f"rt{_n()}", "schema": {"type": "object"}}).json()["name"]


def _webhook_body(c: httpx.Client, w: str) -> dict[str, Any]:
    return {"kind": "webhook", "runnable": {"kind": "script", "path": _script(c, w)["path"]}}


def _trigger(c: httpx.Client, w: str) -> dict[str, Any]:
    return _made(c, "POST", f"{v1(w)}/triggers", json=_webhook_body(c, w)).json()


def _trigger_update(c: httpx.Client, w: str) -> Request:
    trigger = _trigger(c, w)
    body = {"kind": "webhook", "runnable": trigger["runnable"], "key": trigger["key"], "summary": "changed"}
    return "PUT", f"{v1(w)}/triggers/{trigger['id']}", {"json": body}


def _route_body(c: httpx.Client, w: str) -> dict[str, Any]:
    return {"path": f"audit/r{_n()}", "method": "POST", "runnable": {"kind": "script", "path": _script(c, w)["path"]}}


def _route(c: httpx.Client, w: str) -> dict[str, Any]:
    return _made(c, "POST", f"{v1(w)}/routes", json=_route_body(c, w)).json()


def _flow_yaml(name: str, message: str = "hi") -> str:
    return (f"name: {name}\nnamespace: audit\n"
            f"tasks:\n  - name: say\n    type: util.log\n    properties:\n      message: {message}\n")


def _flow(c: httpx.Client, w: str) -> dict[str, Any]:
    return _made(c, "POST", f"{v1(w)}/flows", json={"yamlContent": _flow_yaml(f"flow{_n()}")}).json()


def _flow_update(c: httpx.Client, w: str) -> Request:
    flow = _flow(c, w)
    return "PUT", f"{v1(w)}/flows/{flow['id']}", {"json": {"yamlContent": _flow_yaml(flow["name"], "changed")}}


def _flow_restore(c: httpx.Client, w: str) -> Request:
    flow = _flow(c, w)
    _made(c, "PUT", f"{v1(w)}/flows/{flow['id']}", json={"yamlContent": _flow_yaml(flow["name"], "changed")})
    return "POST", f"{v1(w)}/flows/{flow['id']}/revisions/1/restore", {}


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("index.html", "<p>audit</p>")
    return buffer.getvalue()


def _static(c: httpx.Client, w: str) -> str:
    folder = f"site{_n()}"
    _made(c, "PUT", f"{v1(w)}/static/{folder}", content=_zip())
    return folder


def _sleeping_job(c: httpx.Client, w: str) -> str:
    """A run WAITING on its timer (flowmill.sleep): it can be resumed."""
    path = f"f/audit/sleep{_n()}"
    _made(c, "POST", f"{v1(w)}/scripts", json={"path": path, "content": SLEEPER})
    job_id = _made(c, "POST", f"{v1(w)}/jobs/run/p/{path}", json={}).json()["jobId"]
    wait_for(lambda: c.get(f"{v1(w)}/jobs/{job_id}").json()["status"] == "WAITING", 30, "a run waiting on its timer")
    return job_id


def _waiting_job(c: httpx.Client, w: str) -> str:
    """A run queued a minute ahead: not final, so it can be cancelled."""
    return _made(c, "POST", f"{wm(w)}/jobs/run/p/{_script(c, w)['path']}", params={"scheduled_in_secs": 60}, json={}).text


def _user(c: httpx.Client) -> str:
    username = f"user{_n()}"
    _made(c, "POST", "/auth/register", json={"username": username, "password": PASSWORD, "role": "viewer"})
    return username


def _token(c: httpx.Client) -> str:
    return _made(c, "POST", "/api/v1/tokens", json={"label": f"t{_n()}"}).json()["id"]


def _member(c: httpx.Client) -> str:
    username = _user(c)
    _made(c, "PUT", f"/api/v1/workspaces/{OTHER}/members/{username}", json={"role": "editor"})
    return username


def _execution(c: httpx.Client, w: str, tasks: str, status: str | tuple[str, ...]) -> str:
    """An execution of a new flow of `tasks` (YAML lines), once its status is `status`."""
    text = f"name: exec{_n()}\nnamespace: audit\ntasks:\n{tasks}"
    flow = _made(c, "POST", f"{v1(w)}/flows", json={"yamlContent": text}).json()
    execution_id = _made(c, "POST", f"{v1(w)}/flows/{flow['id']}/execute", json={"inputs": {}}).json()["executionId"]
    wanted = (status,) if isinstance(status, str) else status
    wait_for(lambda: c.get(f"{v1(w)}/executions/{execution_id}").json()["execution"]["status"] in wanted, 30,
             f"an execution {status}")
    return execution_id


def _sleeping_execution(c: httpx.Client, w: str) -> str:
    """An execution WAITING on a minute's flow.sleep: it can be cancelled. (Not while it goes from
    RUNNING to WAITING: a cancel then may match neither and be audited `unchanged`.)"""
    return _execution(c, w, "  - {name: nap, type: flow.sleep, properties: {duration: 60s}}\n", "WAITING")


def _failed_execution(c: httpx.Client, w: str) -> str:
    """A FAILED execution (its util.assert fails after a task that succeeded): it can be retried."""
    return _execution(c, w, "  - {name: first, type: util.noop}\n"
                            "  - {name: gate, type: util.assert, properties: {condition: \"{{ 1 == 2 }}\"}}\n", "FAILED")


def _done_execution(c: httpx.Client, w: str) -> str:
    """A SUCCESS execution of two tasks: it can be replayed from its second."""
    return _execution(c, w, "  - {name: first, type: util.noop}\n  - {name: second, type: util.noop}\n", "SUCCESS")


def wf(workspace: str) -> str:
    """The workflows API: /api/workflows in main, /api/v1/w/{workspace}/workflows elsewhere."""
    return "/api/workflows" if workspace == "main" else f"/api/v1/w/{workspace}/workflows"


def _workflow(c: httpx.Client, w: str) -> str:
    """A new workflow (its main waits for an event `go`): its name."""
    path = f"f/audit/wf{_n()}"
    _made(c, "POST", f"{v1(w)}/scripts", json={"path": path, "content": WAITER})
    return path.replace("/", ".")


def _waiting_instance(c: httpx.Client, w: str) -> str:
    """An instance of a new workflow WAITING for its event: the URL of the instance."""
    url = f"{wf(w)}/{_workflow(c, w)}/instances/i{_n()}"
    _made(c, "POST", url.rsplit("/", 1)[0], json={"id": url.rsplit("/", 1)[1]})
    wait_for(lambda: c.get(url).json()["status"] == "waiting", 30, "an instance waiting for its event")
    return url


def _paused_instance(c: httpx.Client, w: str) -> str:
    url = _waiting_instance(c, w)
    assert _made(c, "POST", f"{url}/pause").json()["status"] == "paused"
    return url


def _terminated_instance(c: httpx.Client, w: str) -> str:
    url = _waiting_instance(c, w)
    assert _made(c, "POST", f"{url}/terminate").json()["status"] == "terminated"
    return url


def _runner_tick(c: httpx.Client, w: str) -> Request:
    _made(c, "PUT", "/api/v1/settings", json={"runnerTick": True})  # off by default
    return "POST", "/api/_runner/tick", {"json": {"maxInstances": 5, "maxSteps": 10}}


def _approval(c: httpx.Client, w: str) -> str:
    """A PENDING approval, the one an execution WAITING on its flow.approval asks for."""
    execution_id = _execution(c, w, "  - {name: gate, type: flow.approval, properties: {message: audited}}\n", "WAITING")
    return wait_for(lambda: next((a["id"] for a in c.get(f"{v1(w)}/approvals", params={"executionId": execution_id}).json()),
                                 None), 30, "the approval")


# Every change of the document, by its /api/v1 form (or its Windmill form): what its successful
# call is. The /api/v1/w/{workspace}/ form of one is called with the same `prepare` in OTHER.
CHANGES: dict[str, Change] = {
    # -- accounts (instance-wide) --
    "POST /auth/register": Change("user.register", lambda c, w: (
        "POST", "/auth/register", {"json": {"username": f"user{_n()}", "password": PASSWORD, "role": "viewer"}})),
    "POST /api/v1/workspaces": Change("workspace.create", lambda c, w: (
        "POST", "/api/v1/workspaces", {"json": {"id": f"ws{_n()}", "name": "Audited"}})),
    "PUT /api/v1/workspaces/{workspace_id}/members/{username}": Change("member.set", lambda c, w: (
        "PUT", f"/api/v1/workspaces/{OTHER}/members/{_user(c)}", {"json": {"role": "editor"}})),
    "DELETE /api/v1/workspaces/{workspace_id}/members/{username}": Change("member.remove", lambda c, w: (
        "DELETE", f"/api/v1/workspaces/{OTHER}/members/{_member(c)}", {})),
    "POST /api/v1/tokens": Change("token.create", lambda c, w: ("POST", "/api/v1/tokens", {"json": {"label": "audited"}})),
    "DELETE /api/v1/tokens/{token_id}": Change("token.revoke", lambda c, w: ("DELETE", f"/api/v1/tokens/{_token(c)}", {})),
    "PUT /api/v1/settings": Change("settings.update", lambda c, w: (
        "PUT", "/api/v1/settings", {"json": {"routeWorkspacePrefix": False, "allowPrivateUrls": False}})),
    "POST /api/users/tokens/create": Change("token.create", lambda c, w: (
        "POST", "/api/users/tokens/create", {"json": {"label": "wmill"}})),
    # -- credentials, KV --
    "POST /api/v1/credentials": Change("credential.create", lambda c, w: (
        "POST", f"{v1(w)}/credentials", {"json": {"name": f"C{_n()}", "value": "v-123456"}})),
    "PUT /api/v1/credentials/{credential_id}": Change("credential.update", lambda c, w: (
        "PUT", f"{v1(w)}/credentials/{_credential(c, w)}", {"json": {"value": "v-654321"}})),
    "DELETE /api/v1/credentials/{credential_id}": Change("credential.delete", lambda c, w: (
        "DELETE", f"{v1(w)}/credentials/{_credential(c, w)}", {})),
    "PUT /api/v1/kv/{namespace}/{key}": Change("kv.put", lambda c, w: ("PUT", f"{v1(w)}/kv/audit/k{_n()}", {"json": {"a": 1}})),
    "DELETE /api/v1/kv/{namespace}/{key}": Change("kv.delete", lambda c, w: ("DELETE", f"{v1(w)}/kv/audit/{_kv(c, w)}", {})),
    # -- scripts, jobs --
    "POST /api/v1/scripts": Change("script.save", lambda c, w: (
        "POST", f"{v1(w)}/scripts", {"json": {"path": f"f/audit/s{_n()}", "content": SCRIPT}})),
    "DELETE /api/v1/scripts/p/{path}": Change("script.delete", lambda c, w: ("DELETE", f"{v1(w)}/scripts/p/{_script(c, w)['path']}", {})),
    "POST /api/v1/jobs/{job_id}/cancel": Change("job.cancel", lambda c, w: ("POST", f"{v1(w)}/jobs/{_waiting_job(c, w)}/cancel", {})),
    "POST /api/v1/jobs/{job_id}/pause": Change("job.pause", lambda c, w: ("POST", f"{v1(w)}/jobs/{_sleeping_job(c, w)}/pause", {})),
    "POST /api/v1/jobs/{job_id}/resume": Change("job.resume", lambda c, w: (
        "POST", f"{v1(w)}/jobs/{_sleeping_job(c, w)}/resume", {})),
    "POST /api/v1/jobs/{job_id}/events": Change("job.event", lambda c, w: (
        "POST", f"{v1(w)}/jobs/{_waiting_job(c, w)}/events", {"json": {"type": "audited", "payload": 1}})),
    # The signed approval links: an answer to a run not waiting yet is kept; refusing cancels it.
    "POST /api/w/{workspace}/jobs_u/resume/{job_id}/{resume_id}/{signature}": Change("job.resume", lambda c, w: (
        "POST", _resume_url(c, w, "resume"), {"json": {}})),
    "POST /api/w/{workspace}/jobs_u/cancel/{job_id}/{resume_id}/{signature}": Change("job.cancel", lambda c, w: (
        "POST", _resume_url(c, w, "cancel"), {"json": {}})),
    # -- variables, resources, resource types --
    "POST /api/v1/variables": Change("variable.create", lambda c, w: (
        "POST", f"{v1(w)}/variables", {"json": {"path": f"f/audit/v{_n()}", "value": "x"}})),
    "PUT /api/v1/variables/p/{path}": Change("variable.update", lambda c, w: (
        "PUT", f"{v1(w)}/variables/p/{_variable(c, w)}", {"json": {"value": "y"}})),
    "DELETE /api/v1/variables/p/{path}": Change("variable.delete", lambda c, w: ("DELETE", f"{v1(w)}/variables/p/{_variable(c, w)}", {})),
    "POST /api/v1/resources": Change("resource.create", lambda c, w: (
        "POST", f"{v1(w)}/resources", {"json": {"path": f"f/audit/r{_n()}", "resourceType": "http_bearer", "value": {"token": "t"}}})),
    "PUT /api/v1/resources/p/{path}": Change("resource.update", lambda c, w: (
        "PUT", f"{v1(w)}/resources/p/{_resource(c, w)}", {"json": {"value": {"token": "u"}}})),
    "DELETE /api/v1/resources/p/{path}": Change("resource.delete", lambda c, w: ("DELETE", f"{v1(w)}/resources/p/{_resource(c, w)}", {})),
    "POST /api/v1/resource_types": Change("resource_type.create", lambda c, w: (
        "POST", f"{v1(w)}/resource_types", {"json": {"name": f"rt{_n()}", "schema": {"type": "object"}}})),
    "DELETE /api/v1/resource_types/{name}": Change("resource_type.delete", lambda c, w: (
        "DELETE", f"{v1(w)}/resource_types/{_resource_type(c, w)}", {})),
    # -- routes, static files, triggers --
    "POST /api/v1/routes": Change("route.create", lambda c, w: ("POST", f"{v1(w)}/routes", {"json": _route_body(c, w)})),
    "PUT /api/v1/routes/{route_id}": Change("route.update", lambda c, w: (
        "PUT", f"{v1(w)}/routes/{_route(c, w)['id']}", {"json": {**_route_body(c, w), "path": None, "summary": "changed"}})),
    "DELETE /api/v1/routes/{route_id}": Change("route.delete", lambda c, w: ("DELETE", f"{v1(w)}/routes/{_route(c, w)['id']}", {})),
    "POST /api/v1/routes/openapi/import": Change("route.import", lambda c, w: (
        "POST", f"{v1(w)}/routes/openapi/import", {"params": {"save": "true"}, "json": {"spec": SPEC, "folder": f"imp{_n()}"}})),
    "PUT /api/v1/static/{folder}": Change("static.upload", lambda c, w: ("PUT", f"{v1(w)}/static/site{_n()}", {"content": _zip()})),
    "DELETE /api/v1/static/{folder}": Change("static.delete", lambda c, w: ("DELETE", f"{v1(w)}/static/{_static(c, w)}", {})),
    "POST /api/v1/triggers": Change("trigger.create", lambda c, w: ("POST", f"{v1(w)}/triggers", {"json": _webhook_body(c, w)})),
    "PUT /api/v1/triggers/{trigger_id}": Change("trigger.update", lambda c, w: _trigger_update(c, w)),
    "DELETE /api/v1/triggers/{trigger_id}": Change("trigger.delete", lambda c, w: ("DELETE", f"{v1(w)}/triggers/{_trigger(c, w)['id']}", {})),
    # -- flows --
    "POST /api/v1/flows": Change("flow.create", lambda c, w: (
        "POST", f"{v1(w)}/flows", {"json": {"yamlContent": _flow_yaml(f"flow{_n()}")}})),
    "PUT /api/v1/flows/{flow_id}": Change("flow.update", lambda c, w: _flow_update(c, w)),
    "DELETE /api/v1/flows/{flow_id}": Change("flow.delete", lambda c, w: ("DELETE", f"{v1(w)}/flows/{_flow(c, w)['id']}", {})),
    "POST /api/v1/flows/import": Change("flow.import", lambda c, w: (
        "POST", f"{v1(w)}/flows/import", {"json": {"yamlContent": _flow_yaml(f"flow{_n()}")}})),
    "POST /api/v1/flows/{flow_id}/revisions/{rev}/restore": Change("flow.restore", lambda c, w: _flow_restore(c, w)),
    # -- executions, approvals: cancel is audited by the jobs service (job:<id>), retry as
    # execution:<id>, a decision as approval:<id>. A replay declares audit_success False like a
    # run, and has its job row too, but its service writes one entry (execution:<new id>) as well.
    "POST /api/v1/executions/{execution_id}/cancel": Change("execution.cancel", lambda c, w: (
        "POST", f"{v1(w)}/executions/{_sleeping_execution(c, w)}/cancel", {})),
    "POST /api/v1/executions/{execution_id}/retry": Change("execution.retry", lambda c, w: (
        "POST", f"{v1(w)}/executions/{_failed_execution(c, w)}/retry", {})),
    "POST /api/v1/executions/{execution_id}/replay": Change("execution.replay", lambda c, w: (
        "POST", f"{v1(w)}/executions/{_done_execution(c, w)}/replay", {"json": {"fromTask": "second"}})),
    "POST /api/v1/approvals/{approval_id}/approve": Change("approval.approve", lambda c, w: (
        "POST", f"{v1(w)}/approvals/{_approval(c, w)}/approve", {"json": {"values": {}}})),
    "POST /api/v1/approvals/{approval_id}/reject": Change("approval.reject", lambda c, w: (
        "POST", f"{v1(w)}/approvals/{_approval(c, w)}/reject", {"json": {}})),
    # -- workflow instances (/api/workflows in main, /api/v1/w/{workspace}/workflows elsewhere):
    # pause is audited by the jobs service (job:<id>), resume and restart as instance:<id>,
    # terminate as the jobs service's cancel (job:<id>), an event by Jobs.send_event (job:<id>);
    # the tick writes nothing itself, so the server audits it by its handler's action.
    **{f"POST {prefix}/{{name}}/instances/{{instance_id}}/{verb}": Change(f"instance.{verb}", (
        lambda prepare, verb: lambda c, w: ("POST", f"{prepare(c, w)}/{verb}", {}))(prepare, verb))
       for prefix in ("/api/workflows", "/api/v1/workflows")
       for verb, prepare in (("pause", _waiting_instance), ("resume", _paused_instance),
                             ("restart", _terminated_instance), ("terminate", _waiting_instance))},
    **{f"POST {prefix}/{{name}}/instances/{{instance_id}}/events": Change("instance.event", lambda c, w: (
        "POST", f"{_waiting_instance(c, w)}/events", {"json": {"type": "go", "payload": 1}}))
       for prefix in ("/api/workflows", "/api/v1/workflows")},
    "POST /api/_runner/tick": Change("workflow.tick", _runner_tick),
    # -- the Windmill API --
    "POST /api/w/{workspace}/variables/create": Change("variable.create", lambda c, w: (
        "POST", f"{wm(w)}/variables/create", {"json": {"path": f"f/audit/v{_n()}", "value": "x"}})),
    "POST /api/w/{workspace}/variables/update/{path}": Change("variable.update", lambda c, w: (
        "POST", f"{wm(w)}/variables/update/{_variable(c, w)}", {"json": {"value": "y"}})),
    "POST /api/w/{workspace}/resources/create": Change("resource.create", lambda c, w: (
        "POST", f"{wm(w)}/resources/create", {"json": {"path": f"f/audit/r{_n()}", "resource_type": "http_bearer", "value": {"token": "t"}}})),
    "POST /api/w/{workspace}/resources/update_value/{path}": Change("resource.update", lambda c, w: (
        "POST", f"{wm(w)}/resources/update_value/{_resource(c, w)}", {"json": {"value": {"token": "u"}}})),
    "POST /api/w/{workspace}/jobs_u/queue/cancel/{job_id}": Change("job.cancel", lambda c, w: (
        "POST", f"{wm(w)}/jobs_u/queue/cancel/{_waiting_job(c, w)}", {"json": {"reason": "audited"}})),
    "POST /api/w/{workspace}/job_metrics/set_progress/{job_id}": Change("job.progress", lambda c, w: (
        "POST", f"{wm(w)}/job_metrics/set_progress/{_waiting_job(c, w)}", {"json": {"percent": 40}})),
    "POST /api/w/{workspace}/jobs/flow/user_states/{flow_id}/{key}": Change("flow_state.set", lambda c, w: (
        "POST", f"{wm(w)}/jobs/flow/user_states/{_waiting_job(c, w)}/k", {"json": {"v": 1}})),
}

# Runs (opt["audit_success"] False): the run's own job row, with the request's id, is the record
# of its success; the audit log holds only their refusals.
RUNS: dict[str, Prepare] = {
    "POST /api/v1/jobs/run/p/{path}": lambda c, w: ("POST", f"{v1(w)}/jobs/run/p/{_script(c, w)['path']}", {"json": {}}),
    "POST /api/v1/jobs/run/h/{digest}": lambda c, w: ("POST", f"{v1(w)}/jobs/run/h/{_script(c, w)['hash']}", {"json": {}}),
    "POST /api/v1/jobs/run_wait_result/p/{path}": lambda c, w: (
        "POST", f"{v1(w)}/jobs/run_wait_result/p/{_script(c, w)['path']}", {"json": {}}),
    "POST /api/v1/jobs/run_and_stream/p/{path}": lambda c, w: (
        "POST", f"{v1(w)}/jobs/run_and_stream/p/{_script(c, w)['path']}", {"json": {}}),
    "POST /api/v1/webhook/{key}": lambda c, w: ("POST", f"/api/v1/webhook/{_trigger(c, w)['key']}", {"json": {}}),
    "POST /api/w/{workspace}/jobs/run/p/{path}": lambda c, w: ("POST", f"{wm(w)}/jobs/run/p/{_script(c, w)['path']}", {"json": {}}),
    "POST /api/w/{workspace}/jobs/run/h/{digest}": lambda c, w: ("POST", f"{wm(w)}/jobs/run/h/{_script(c, w)['hash']}", {"json": {}}),
    "POST /api/w/{workspace}/jobs/run_wait_result/p/{path}": lambda c, w: (
        "POST", f"{wm(w)}/jobs/run_wait_result/p/{_script(c, w)['path']}", {"json": {}}),
    "POST /api/w/{workspace}/jobs/run_wait_result/h/{digest}": lambda c, w: (
        "POST", f"{wm(w)}/jobs/run_wait_result/h/{_script(c, w)['hash']}", {"json": {}}),
    "POST /api/v1/flows/{flow_id}/execute": lambda c, w: ("POST", f"{v1(w)}/flows/{_flow(c, w)['id']}/execute", {"json": {}}),
    "POST /api/w/{workspace}/jobs/run/f/{path}": lambda c, w: ("POST", f"{wm(w)}/jobs/run/f/f/audit/{_flow(c, w)['name']}", {"json": {}}),
    # A workflow instance is a run (kind workflow) with the request's id; a batch of one here,
    # so that its request has one job row.
    **{f"POST {prefix}/{{name}}/instances": lambda c, w: ("POST", f"{wf(w)}/{_workflow(c, w)}/instances", {"json": {}})
       for prefix in ("/api/workflows", "/api/v1/workflows")},
    **{f"POST {prefix}/{{name}}/instances/batch": lambda c, w: (
        "POST", f"{wf(w)}/{_workflow(c, w)}/instances/batch", {"json": {"instances": [{"id": f"b{_n()}"}]}})
       for prefix in ("/api/workflows", "/api/v1/workflows")},
}

# The action a run's refusal is audited under, when not job.run.
RUN_ACTIONS = {"POST /api/v1/flows/{flow_id}/execute": "flow.execute",
               **{f"POST {prefix}/{{name}}/instances{batch}": "instance.create"
                  for prefix in ("/api/workflows", "/api/v1/workflows") for batch in ("", "/batch")}}

# Reads that take a body, and logging in: they change nothing (opt["audit"] False) and leave no entry.
CHANGES_NOTHING: dict[str, Prepare] = {
    "POST /api/v1/routes/openapi/export": lambda c, w: ("POST", f"{v1(w)}/routes/openapi/export", {"json": {}}),
    "POST /api/v1/routes/openapi/export/curl": lambda c, w: ("POST", f"{v1(w)}/routes/openapi/export/curl", {"json": {}}),
    "POST /api/v1/triggers/preview": lambda c, w: ("POST", f"{v1(w)}/triggers/preview", {"json": {"cron": "* * * * *"}}),
    "POST /api/v1/flows/validate": lambda c, w: ("POST", f"{v1(w)}/flows/validate", {"json": {"yamlContent": _flow_yaml("v")}}),
    "POST /auth/login": lambda c, w: ("POST", "/auth/login", {"json": {"username": "admin", "password": PASSWORD}}),
}


def _resume_url(c: httpx.Client, w: str, which: str) -> str:
    urls = _made(c, "GET", f"{wm(w)}/jobs/resume_urls/{_waiting_job(c, w)}/1").json()
    return httpx.URL(urls[which]).path


# What cannot succeed yet, called to see it still answers its known refusal (audited as
# `rejected`); when one starts succeeding, this test fails and it moves to CHANGES or RUNS.
CANNOT_SUCCEED_YET: dict[str, tuple[str, int, Prepare]] = {
    # Only a workflow's own run may checkpoint its steps (with its token): never a person.
    "POST /api/w/{workspace}/jobs/wac/inline_checkpoint/{job_id}": ("job.step", 403, lambda c, w: (
        "POST", f"{wm(w)}/jobs/wac/inline_checkpoint/{_waiting_job(c, w)}", {"json": {"key": "k", "result": 1}})),
}

# Changes a viewer may make, so no refusal to look for: its own tokens, firing a webhook (its
# key is the authority, not a role) and answering an approval link (its signature is).
VIEWER_MAY = {"POST /api/v1/tokens", "DELETE /api/v1/tokens/{token_id}", "POST /api/users/tokens/create",
              "POST /api/v1/webhook/{key}", "POST /api/w/{workspace}/jobs_u/resume/{job_id}/{resume_id}/{signature}",
              "POST /api/w/{workspace}/jobs_u/cancel/{job_id}/{resume_id}/{signature}"}


def _operations(server: FlowmillServer) -> list[tuple[str, str, str]]:
    """(the document's `METHOD path`, its key in the lists above, the workspace to call it in)."""
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    found = []
    for path, item in doc["paths"].items():
        for method in ("post", "put", "patch", "delete"):
            if method not in item:
                continue
            operation = f"{method.upper()} {path}"
            if path.startswith("/api/v1/w/{workspace}/"):
                found.append((operation, f"{method.upper()} /api/v1/{path.removeprefix('/api/v1/w/{workspace}/')}", OTHER))
            elif path.startswith("/api/w/{workspace}/"):
                found.append((operation, operation, OTHER))
            else:
                found.append((operation, operation, "main"))
    return found


def _audit(c: httpx.Client, workspaces: tuple[str, ...] = ("main", OTHER)) -> dict[str, list[dict[str, Any]]]:
    """Every audit entry of `workspaces`, by request id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for workspace in workspaces:
        cursor = None
        while True:
            page = c.get(f"{v1(workspace)}/audit", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            for item in page.json()["items"]:
                found.setdefault(item["requestId"], []).append(item)
            cursor = page.json()["nextCursor"]
            if not cursor:
                break
    return found


def _audit_of(c: httpx.Client, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The entries of `request_ids`, once each has one: a refusal's entry is written just after
    its answer (`app.server.errors`)."""
    def complete() -> dict[str, list[dict[str, Any]]] | None:
        audit = _audit(c)
        return audit if all(audit.get(r) for r in request_ids) else None

    return wait_for(complete, what="an audit entry for every refused call")


def _send(c: httpx.Client, request: Request, request_id: str, token: str | None = None) -> httpx.Response:
    method, url, kwargs = request
    headers = {"X-Request-Id": request_id, **({"Authorization": f"Bearer {token}"} if token else {})}
    return c.request(method, url, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def admin(server: FlowmillServer) -> Iterator[httpx.Client]:
    with server.client(server.admin_token()) as c:
        if c.get(f"/api/v1/w/{OTHER}/audit").status_code == 404:
            _made(c, "POST", "/api/v1/workspaces", json={"id": OTHER, "name": "Audit walk"})
        yield c


def test_every_mutating_operation_is_listed(server: FlowmillServer) -> None:
    operations = _operations(server)
    assert len(operations) > 80
    listed = {*CHANGES, *RUNS, *CHANGES_NOTHING, *CANNOT_SUCCEED_YET}
    assert len(listed) == len(CHANGES) + len(RUNS) + len(CHANGES_NOTHING) + len(CANNOT_SUCCEED_YET), "a key in two lists"
    unlisted = sorted(operation for operation, key, _ in operations if key not in listed)
    assert not unlisted, f"mutating operations in no list of this test (add each with a successful call): {unlisted}"
    stale = sorted(listed - {key for _, key, _ in operations})
    assert not stale, f"listed here but not in the OpenAPI document: {stale}"


def test_every_successful_change_is_audited_once(server: FlowmillServer, admin: httpx.Client) -> None:
    called: list[tuple[str, str, str, httpx.Response]] = []  # (operation, key, request id, answer)
    for operation, key, workspace in _operations(server):
        prepare = CHANGES[key].prepare if key in CHANGES else RUNS.get(key) or CHANGES_NOTHING.get(key)
        if prepare is None:
            continue
        request_id = f"walk-{_n()}"
        answer = _send(admin, prepare(admin, workspace), request_id)
        assert answer.status_code < 400, (operation, answer.status_code, answer.text)
        called.append((operation, key, request_id, answer))
    audit = _audit(admin)
    wrong = []  # every operation that is not as it should be, to see them all at once
    for operation, key, request_id, answer in called:
        entries = audit.get(request_id, [])
        if key in CHANGES:
            wanted = (CHANGES[key].action, answer.status_code, "success")
            got = [(e["action"], e["status"], e["outcome"]) for e in entries]
            workspace = OTHER if operation.split(" ", 1)[1].startswith(("/api/v1/w/", "/api/w/")) else "main"
            if got != [wanted] or entries[0]["workspace"] != workspace:
                wrong.append(f"{operation} answered {answer.status_code}: want one entry {wanted} in {workspace}, found {entries}")
        elif key in RUNS:
            jobs = server.query("SELECT workspace_id FROM job WHERE request_id = $1", request_id)
            if entries or len(jobs) != 1:
                wrong.append(f"{operation}: want one job row and no audit entry, found {jobs} and {entries}")
        elif entries:
            wrong.append(f"{operation} changes nothing, yet it was audited: {entries}")
    assert not wrong, "\n".join(wrong)
    assert len(called) > 70


def test_what_cannot_succeed_yet_still_refuses(server: FlowmillServer, admin: httpx.Client) -> None:
    called = []
    for operation, key, workspace in _operations(server):
        if key in CANNOT_SUCCEED_YET:
            action, status, prepare = CANNOT_SUCCEED_YET[key]
            request_id = f"never-{_n()}"
            answer = _send(admin, prepare(admin, workspace), request_id)
            assert answer.status_code == status, (operation, answer.status_code, answer.text)
            called.append((operation, action, status, request_id))
    audit = _audit_of(admin, [request_id for *_, request_id in called])
    for operation, action, status, request_id in called:
        got = [(e["action"], e["status"], e["outcome"]) for e in audit.get(request_id, [])]
        assert got == [(action, status, "denied" if status == 403 else "rejected")], (operation, got)
    assert {key for _, key, _ in _operations(server) if key in CANNOT_SUCCEED_YET} == set(CANNOT_SUCCEED_YET)
    assert len(called) >= len(CANNOT_SUCCEED_YET)  # a /api/v1 change also has its /api/v1/w/{workspace} form


def test_every_refused_change_is_audited_once_as_denied(server: FlowmillServer, admin: httpx.Client) -> None:
    username = f"walk-viewer{_n()}"
    viewer = server.user(username, "viewer")
    _made(admin, "PUT", f"/api/v1/workspaces/{OTHER}/members/{username}", json={"role": "viewer"})
    refused: list[tuple[str, str, str]] = []  # (operation, action, request id)
    actions = {key: change.action for key, change in CHANGES.items()} | {key: RUN_ACTIONS.get(key, "job.run") for key in RUNS}
    for operation, key, workspace in _operations(server):
        if key not in actions or key in VIEWER_MAY or (workspace == OTHER and not key.startswith("POST /api/w/")):
            continue  # one refusal per operation: its /api/v1 form (a Windmill one has only its workspace form)
        request_id = f"refused-{_n()}"
        prepare = CHANGES[key].prepare if key in CHANGES else RUNS[key]
        answer = _send(admin, prepare(admin, workspace), request_id, viewer)
        assert answer.status_code == 403, (operation, answer.status_code, answer.text)
        refused.append((operation, actions[key], request_id))
    audit = _audit_of(admin, [request_id for *_, request_id in refused])
    for operation, action, request_id in refused:
        got = [(e["action"], e["status"], e["outcome"], e["actor"]) for e in audit.get(request_id, [])]
        assert len(got) == 1 and got[0][:3] == (action, 403, "denied"), (operation, got)
    assert len(refused) > 40
