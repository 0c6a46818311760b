"""Schemathesis against a real server, bounded: a few generated requests per operation of the
OpenAPI document, each answer checked against the document (its status documented, its body
matching the schema) and none a server error.

It runs the `schemathesis` command line in a subprocess, on SQLite, as the instance admin (so
that every operation is reached past its role check); the server, the document and every request
are on 127.0.0.1. One worker: Hypothesis, generating in threads, trips over a CPython 3.11
bug (`SystemError: AST constructor recursion depth mismatch`) now and then. The document's `servers` is relative (`/`), so schemathesis sends nothing elsewhere.

Nothing is excluded: the admin's session is a JWT, which no generated call can revoke, and an
instance admin keeps the admin role in every workspace whatever a generated call does to its
membership.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import httpx

from tests.support import FlowmillServer

EXAMPLES_PER_OPERATION = 5
SEED = 20260513  # fixed: a failure reproduces, and a run costs the same each time
DEADLINE_S = 420  # far above the ~2 minutes it takes on a loaded 2-core machine: a hang, not slowness
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document() -> None:
    server = FlowmillServer("sqlite")
    try:
        server.start()
        token = server.admin_token()
        _seed(server, token)
        document = httpx.get(f"{server.url}/api/v1/openapi.json").json()
        # Relative servers and internal $refs only: nothing sends schemathesis to another host.
        assert all(entry["url"].startswith("/") for entry in document.get("servers", []))
        assert all(ref.startswith("#/") for ref in _refs(document))
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/api/v1/openapi.json", "--url", server.url,
            "--header", f"Authorization: Bearer {token}",
            "--checks", CHECKS, "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED),
            "--phases", "coverage,fuzzing", "--workers", "1", "--request-timeout", "30", "--no-shrink",
            "--max-redirects", "0", "--output-truncate", "true",
        ]
        env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*"}
        env.pop("SCHEMATHESIS_HOOKS", None)
        try:
            run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=DEADLINE_S, env=env,
                                 cwd=server.home, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as stopped:
            raise AssertionError(f"schemathesis did not finish within {DEADLINE_S} s: {str(stopped.stdout)[-3000:]}") from None
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-12_000:]
        assert " passed" in output and "Tested: " in output, output[-3000:]
        assert "internal server error" not in server.output().lower()
    finally:
        server.close()


def _seed(server: FlowmillServer, token: str) -> None:
    """One of each thing the lists answer (a script and its runs, routes of two auth kinds, a
    webhook and a schedule, a static folder, an entry): generated ids rarely name anything, so
    the lists are where real views meet the document."""
    runnable = {"kind": "script", "path": "f/fuzz/echo"}
    site = io.BytesIO()
    with zipfile.ZipFile(site, "w") as archive:
        archive.writestr("index.html", "<p>hi</p>")
    with server.client(token) as client:
        for method, path, body in (
            ("POST", "/api/v1/scripts", {"path": "f/fuzz/echo", "content": "def main(x: int = 1):\n    return {'x': x}\n"}),
            ("POST", "/api/v1/jobs/run_wait_result/p/f/fuzz/echo", {"x": 2}),
            ("POST", "/api/v1/routes", {"path": "fuzz/:id", "method": "GET", "runnable": runnable,
                                        "auth": {"kind": "api_key", "header": "X-Key", "key": "k"}}),
            ("POST", "/api/v1/routes", {"path": "fuzz/signed", "runnable": runnable, "requestType": "async",
                                        "auth": {"kind": "hmac", "preset": "stripe", "secret": "s"}}),
            ("POST", "/api/v1/triggers", {"kind": "webhook", "runnable": runnable, "secret": "s"}),
            ("POST", "/api/v1/triggers", {"kind": "schedule", "runnable": runnable, "cron": "0 0 1 1 *", "args": {"x": 3}}),
            ("PUT", "/api/v1/kv/fuzz/k", {"a": [1, None]}),
        ):
            client.request(method, path, json=body).raise_for_status()
        client.put("/api/v1/static/fuzz-site", content=site.getvalue()).raise_for_status()


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []
