"""Every mutating operation of the OpenAPI document, called successfully, leaves one audit entry
(or, for a run, the run's own record; for a read with a body, nothing to audit)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx

from tests.support import FlowmillServer

SCRIPT = "def main(n: int = 1):\n    return {'n': n}\n"
NOT_CHANGES = {"/api/v1/routes/openapi/export", "/api/v1/routes/openapi/export/curl", "/api/v1/triggers/preview"}
RUNS = {"/api/v1/jobs/run/p/{path}", "/api/v1/jobs/run/h/{digest}", "/api/v1/jobs/run_wait_result/p/{path}",
        "/api/v1/jobs/run_and_stream/p/{path}", "/api/v1/webhook/{key}", "/api/w/{workspace}/jobs/run/p/{path}",
        "/api/w/{workspace}/jobs/run/h/{digest}", "/api/w/{workspace}/jobs/run_wait_result/p/{path}",
        "/api/w/{workspace}/jobs/run_wait_result/h/{digest}"}
numbers = itertools.count(1)


def _script(c: httpx.Client, w: str) -> dict[str, Any]:
    n = next(numbers)
    saved = c.post(f"{w}/scripts", json={"path": f"f/audit/s{n}", "content": SCRIPT})
    assert saved.status_code in (200, 201), saved.text
    return {"path": f"f/audit/s{n}", **saved.json()}


def _made(c: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    made = c.post(url, json=body)
    assert made.status_code in (200, 201), made.text
    return made.json()


# Each: (client, "/api/v1" or "/api/v1/w/main") -> the successful call.
Call = Callable[[httpx.Client, str], httpx.Response]
CALLS: dict[str, Call] = {
    "POST /api/v1/credentials": lambda c, w: c.post(f"{w}/credentials", json={"name": f"C{next(numbers)}", "value": "v-123456"}),
    "PUT /api/v1/credentials/{credential_id}": lambda c, w: c.put(
        f"{w}/credentials/{_made(c, f'{w}/credentials', {'name': f'C{next(numbers)}', 'value': 'v-123456'})['id']}",
        json={"value": "v-654321"}),
    "DELETE /api/v1/credentials/{credential_id}": lambda c, w: c.delete(
        f"{w}/credentials/{_made(c, f'{w}/credentials', {'name': f'C{next(numbers)}', 'value': 'v-123456'})['id']}"),
    "PUT /api/v1/kv/{namespace}/{key}": lambda c, w: c.put(f"{w}/kv/audit/k{next(numbers)}", json={"a": 1}),
    "DELETE /api/v1/kv/{namespace}/{key}": lambda c, w: (
        lambda k: (c.put(f"{w}/kv/audit/{k}", json=1), c.delete(f"{w}/kv/audit/{k}"))[1])(f"k{next(numbers)}"),
    "POST /api/v1/scripts": lambda c, w: c.post(f"{w}/scripts", json={"path": f"f/audit/s{next(numbers)}", "content": SCRIPT}),
    "DELETE /api/v1/scripts/p/{path}": lambda c, w: c.delete(f"{w}/scripts/p/{_script(c, w)['path']}"),
    "POST /api/v1/jobs/run/p/{path}": lambda c, w: c.post(f"{w}/jobs/run/p/{_script(c, w)['path']}", json={}),
    "POST /api/v1/jobs/run_wait_result/p/{path}": lambda c, w: c.post(f"{w}/jobs/run_wait_result/p/{_script(c, w)['path']}", json={}),
    "POST /api/v1/jobs/run_and_stream/p/{path}": lambda c, w: c.post(f"{w}/jobs/run_and_stream/p/{_script(c, w)['path']}", json={}),
    "POST /api/v1/jobs/{job_id}/cancel": lambda c, w: c.post(
        f"{w}/jobs/{c.post(f'{w}/jobs/run/p/' + _script(c, w)['path'], json={}).json()['jobId']}/cancel"),
    "POST /api/v1/variables": lambda c, w: c.post(f"{w}/variables", json={"path": f"f/audit/v{next(numbers)}", "value": "x"}),
    "PUT /api/v1/variables/p/{path}": lambda c, w: c.put(
        f"{w}/variables/p/{_made(c, f'{w}/variables', {'path': f'f/audit/v{next(numbers)}', 'value': 'x'})['path']}",
        json={"value": "y"}),
    "DELETE /api/v1/variables/p/{path}": lambda c, w: c.delete(
        f"{w}/variables/p/{_made(c, f'{w}/variables', {'path': f'f/audit/v{next(numbers)}', 'value': 'x'})['path']}"),
    "POST /api/v1/resources": lambda c, w: c.post(
        f"{w}/resources", json={"path": f"f/audit/r{next(numbers)}", "resourceType": "http_bearer", "value": {"token": "t"}}),
    "POST /api/v1/resource_types": lambda c, w: c.post(
        f"{w}/resource_types", json={"name": f"rt{next(numbers)}", "schema": {"type": "object"}}),
    "DELETE /api/v1/resource_types/{name}": lambda c, w: c.delete(
        f"{w}/resource_types/{_made(c, f'{w}/resource_types', {'name': f'rt{next(numbers)}', 'schema': {'type': 'object'}})['name']}"),
    "POST /api/v1/triggers": lambda c, w: c.post(
        f"{w}/triggers", json={"kind": "webhook", "runnable": {"kind": "script", "path": _script(c, w)["path"]}}),
    "DELETE /api/v1/triggers/{trigger_id}": lambda c, w: c.delete(
        f"{w}/triggers/{_made(c, f'{w}/triggers', {'kind': 'webhook', 'runnable': {'kind': 'script', 'path': _script(c, w)['path']}})['id']}"),
    "POST /api/v1/routes/openapi/export": lambda c, w: c.post(f"{w}/routes/openapi/export", json={}),
    "POST /api/v1/triggers/preview": lambda c, w: c.post(f"{w}/triggers/preview", json={"cron": "* * * * *"}),
}


def _normal(method: str, path: str) -> tuple[str, str]:
    """(the table's key, the workspace prefix to call it under)."""
    if path.startswith("/api/v1/w/{workspace}"):
        return f"{method} /api/v1{path.removeprefix('/api/v1/w/{workspace}')}", "/api/v1/w/main"
    return f"{method} {path}", "/api/v1"


def _audit_by_request(c: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    cursor = None
    while True:
        page = c.get("/api/v1/audit", params={"limit": 200, **({"cursor": cursor} if cursor else {})}).json()
        for item in page["items"]:
            found.setdefault(item["requestId"], []).append(item)
        cursor = page.get("cursor") or page.get("nextCursor")
        if not cursor:
            return found


def test_every_mutating_operation_is_audited(server: FlowmillServer) -> None:
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    operations = [(m.upper(), path) for path, item in doc["paths"].items()
                  for m in ("post", "put", "patch", "delete") if m in item]
    assert len(operations) > 50
    called: list[tuple[str, str, str, str]] = []
    with server.client(server.admin_token()) as c:
        for method, path in operations:
            key, w = _normal(method, path)
            call = CALLS.get(key)
            if call is None:
                continue
            request_id = f"audit-{next(numbers)}"
            c.headers["X-Request-Id"] = request_id
            answer = call(c, w)
            assert answer.status_code < 400, (key, answer.status_code, answer.text)
            called.append((key, path, request_id, str(answer.status_code)))
        del c.headers["X-Request-Id"]
        audit = _audit_by_request(c)
    for key, path, request_id, status in called:
        bare = key.split(" ", 1)[1]
        mine = [e for e in audit.get(request_id, []) if str(e["status"]) == status and e["outcome"] == "success"]
        if bare in NOT_CHANGES:
            continue
        if bare in RUNS:
            continue  # recorded by the run itself
        assert mine, f"{key} ({path}) answered {status} without an audit entry: {audit.get(request_id)}"
