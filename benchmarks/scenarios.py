"""The scenarios: what Flowmill is asked to do, and which reference request it is compared with.

To add one, append a `Scenario` to `SCENARIOS`. Requests to Flowmill carry an admin's token
and `Content-Type: application/json`; `{n}` in a path becomes a key unique to each request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from benchmarks.load import Load
from benchmarks.servers import Flowmill

_JSON = (("Content-Type", "application/json"),)

# The reference's endpoints, by the name a scenario gives.
REFERENCES = {
    "GET": Load("GET", "/ref/hot"),
    "PUT": Load("PUT", "/ref/k{n}", '{"n": 1, "s": "hello"}', _JSON),
    "POST": Load("POST", "/ref/run", '{"x": 1}', _JSON),
}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One load on Flowmill, measured side by side with a reference endpoint at the same
    number of connections."""

    name: str
    method: str
    path: str
    body: str | None
    connections: int
    reference: str  # a key of REFERENCES
    prepare: Callable[[Flowmill], object] = lambda server: None  # once, before the warm-up

    def load(self, server: Flowmill) -> Load:
        """The request sent to `server`, with its token."""
        return Load(self.method, self.path, self.body, server.auth_headers())


TRIVIAL = "def main(**args):\n    return args\n"


def _save_trivial(server: Flowmill) -> None:
    server.call("POST", "/api/v1/scripts", json={"path": "f/bench/echo", "content": TRIVIAL})


def _route(path: str, request_type: str) -> Callable[[Flowmill], None]:
    def prepare(server: Flowmill) -> None:
        _save_trivial(server)
        server.call("POST", "/api/v1/routes", json={
            "path": path, "method": "POST", "runnable": {"kind": "script", "path": "f/bench/echo"}, "requestType": request_type,
        })
    return prepare


def _webhook(server: Flowmill) -> None:
    _save_trivial(server)
    server.call("POST", "/api/v1/triggers", json={
        "kind": "webhook", "key": "bench-hook", "runnable": {"kind": "script", "path": "f/bench/echo"},
    })


THREE_TASKS = """\
name: three
namespace: bench
inputs:
  - {name: x, type: integer, default: 0}
tasks:
  - {name: first, type: util.set, properties: {value: "{{ inputs.x }}"}}
  - {name: second, type: util.set, properties: {value: "{{ outputs.first.value + 1 }}"}}
  - {name: third, type: util.log, properties: {message: "got {{ outputs.second.value }}"}}
"""


def _flow_webhook(server: Flowmill) -> None:
    server.call("POST", "/api/v1/flows", json={"yamlContent": THREE_TASKS})
    server.call("POST", "/api/v1/triggers", json={
        "kind": "webhook", "key": "bench-flow-hook", "runnable": {"kind": "flow", "path": "f/bench/three"},
    })


def _put_hot(server: Flowmill) -> None:
    server.call("PUT", "/api/v1/kv/bench/hot", json={"n": 1})


SCENARIOS = [
    Scenario("kv_put", "PUT", "/api/v1/kv/bench/k{n}", '{"n": 1, "s": "hello"}', 32, "PUT"),
    Scenario("kv_get", "GET", "/api/v1/kv/bench/hot", None, 32, "GET", prepare=_put_hot),
    Scenario("script_sync_16", "POST", "/api/v1/jobs/run_wait_result/p/f/bench/echo", '{"x": 1}', 16, "POST",
             prepare=_save_trivial),
    Scenario("script_sync_1", "POST", "/api/v1/jobs/run_wait_result/p/f/bench/echo", '{"x": 1}', 1, "POST",
             prepare=_save_trivial),
    Scenario("script_async_32", "POST", "/api/v1/jobs/run/p/f/bench/echo", '{"x": 1}', 32, "POST",
             prepare=_save_trivial),
    Scenario("route_async_32", "POST", "/api/r/bench/async", '{"x": 1}', 32, "POST", prepare=_route("bench/async", "async")),
    Scenario("webhook_32", "POST", "/api/v1/webhook/bench-hook", '{"x": 1}', 32, "POST", prepare=_webhook),
    Scenario("route_sync_16", "POST", "/api/r/bench/sync", '{"x": 1}', 16, "POST", prepare=_route("bench/sync", "sync")),
    Scenario("flow_webhook_32", "POST", "/api/v1/webhook/bench-flow-hook", '{"x": 1}', 32, "POST", prepare=_flow_webhook),
]
