"""`python -m benchmarks.flows`: how long a flow takes end to end, from the request that starts
it to its SUCCESS answered, on a fresh Flowmill (printed as JSON; progress on stderr).

- `plugins_40`: 40 trivial plugin tasks in sequence (each one checkpointed before the next).
- `python_40`: 40 `script.python` tasks in sequence, each a walled-off child of the fork server.

Each flow sits behind a synchronous route, so a measure is one HTTP request: the execution is
queued, carried out and answered with its outputs. The webhook-started flow at 32 connections,
side by side with the reference, is the scenario `flow_webhook_32` of `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from benchmarks.servers import Flowmill


def _flow(name: str, task: str, count: int) -> str:
    lines = [f"name: {name}", "namespace: bench", "tasks:"]
    for n in range(count):
        lines.append(f"  - {{name: t{n}, {task}}}")
    lines.append("outputs:")
    lines.append(f"  last: \"{{{{ outputs.t{count - 1} }}}}\"")
    return "\n".join(lines) + "\n"


FLOWS = {
    "plugins_40": _flow("plugins40", "type: util.set, properties: {value: 1}", 40),
    "python_40": _flow("python40", "type: script.python, properties: {code: \"def main():\\n    return 1\\n\"}", 40),
}


def measure(server: Flowmill, name: str, rounds: int) -> dict[str, float]:
    """Run flow `name` `rounds` times through its synchronous route; its timings in ms."""
    server.call("POST", "/api/v1/flows", json={"yamlContent": FLOWS[name]})
    server.call("POST", "/api/v1/routes", json={"path": f"bench/{name}", "method": "POST", "requestType": "sync",
                                                 "runnable": {"kind": "flow", "path": f"f/bench/{name.replace('_', '')}"}})
    times = []
    for n in range(rounds + 2):
        started = time.perf_counter()
        answer = server.client.post(f"/api/r/bench/{name}", json={}, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"{name}: {answer.status_code} {answer.text[:500]}")
        if n >= 2:  # the first two warm the caches (parsing, the fork servers' children)
            times.append(elapsed)
    result = {"rounds": rounds, "p50Ms": round(statistics.median(times), 1), "meanMs": round(statistics.mean(times), 1),
              "minMs": round(min(times), 1), "maxMs": round(max(times), 1)}
    print(f"{name:<12} p50 {result['p50Ms']:7.1f} ms  mean {result['meanMs']:7.1f} ms  min {result['minMs']:7.1f} ms",
          file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="measured executions per flow (default 30)")
    args = parser.parse_args(argv)
    server = Flowmill()
    try:
        report = {name: measure(server, name, args.rounds) for name in FLOWS}
    finally:
        server.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
