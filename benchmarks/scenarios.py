"""The scenarios: what Flowmill is asked to do, and the reference request it is compared with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from benchmarks.load import Load
from benchmarks.servers import Flowmill

JSON = ("Content-Type", "application/json")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    load: Callable[[Flowmill], Load]  # the Flowmill request, given the server (for its token)
    reference: Load
    prepare: Callable[[Flowmill], None] = lambda server: None


def _auth(server: Flowmill) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {server.token}"), JSON)


REF_PUT = Load("PUT", "/ref/k{n}", '{"n": 1, "s": "hello"}', (JSON,))
REF_GET = Load("GET", "/ref/hot")
REF_POST = Load("POST", "/ref/run", '{"x": 1}', (JSON,))
TRIVIAL = "def main(**args):\n    return args\n"


def _save_trivial(server: Flowmill) -> None:
    server.call("POST", "/api/v1/scripts", json={"path": "f/bench/echo", "content": TRIVIAL})

SCENARIOS = [
    Scenario(
        "kv_put", 32,
        lambda s: Load("PUT", "/api/v1/kv/bench/k{n}", '{"n": 1, "s": "hello"}', _auth(s)),
        REF_PUT,
    ),
    Scenario(
        "kv_get", 32,
        lambda s: Load("GET", "/api/v1/kv/bench/hot", None, _auth(s)),
        REF_GET,
        prepare=lambda s: s.call("PUT", "/api/v1/kv/bench/hot", json={"n": 1}) and None,
    ),
    Scenario(
        "script_sync_16", 16,
        lambda s: Load("POST", "/api/v1/jobs/run_wait_result/p/f/bench/echo", '{"x": 1}', _auth(s)),
        REF_POST, prepare=_save_trivial,
    ),
    Scenario(
        "script_sync_1", 1,
        lambda s: Load("POST", "/api/v1/jobs/run_wait_result/p/f/bench/echo", '{"x": 1}', _auth(s)),
        REF_POST, prepare=_save_trivial,
    ),
    Scenario(
        "script_async_32", 32,
        lambda s: Load("POST", "/api/v1/jobs/run/p/f/bench/echo", '{"x": 1}', _auth(s)),
        REF_POST, prepare=_save_trivial,
    ),
]
