"""`python -m benchmarks.workflow_steps`: milliseconds per step of a 1,000-step workflow, with
Flowmill's SDK (`flowmill.step`: checkpoints over the child protocol) and with Windmill's
(`wmill.step`: each step posted to `jobs/wac/inline_checkpoint`), on a fresh Flowmill (printed
as JSON; progress on stderr).

Each measure is one synchronous run (`run_wait_result`) of a workflow whose steps return at
once, from the request to its answer; a step's share is that time over the number of steps.
The workflows of one step first warm the fork servers and the script versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from benchmarks.servers import Flowmill

WORKFLOWS = {
    "flowmill": """
from flowmill import workflow, step


@workflow
def main(n: int = 1000):
    total = 0
    for i in range(n):
        total += step(f"s{i}", lambda: i)
    return total
""",
    "wmill": """
from wmill import workflow, step


@workflow
async def main(n: int = 1000):
    total = 0
    for i in range(n):
        total += await step(f"s{i}", lambda: i)
    return total
""",
}


def measure(server: Flowmill, sdk: str, steps: int, rounds: int) -> dict[str, float]:
    """Run the `sdk` workflow of `steps` steps `rounds` times; ms per step."""
    path = f"f/bench/steps_{sdk}"
    server.call("POST", "/api/v1/scripts", json={"path": path, "content": WORKFLOWS[sdk]})
    server.call("POST", f"/api/v1/jobs/run_wait_result/p/{path}", json={"n": 1})
    per_step = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = server.call("POST", f"/api/v1/jobs/run_wait_result/p/{path}", json={"n": steps})
        elapsed = (time.perf_counter() - started) * 1000
        if answer.json() != steps * (steps - 1) // 2:
            raise SystemExit(f"{sdk}: unexpected result {answer.text[:200]}")
        per_step.append(elapsed / steps)
    result = {"steps": steps, "rounds": rounds, "msPerStepP50": round(statistics.median(per_step), 3),
              "msPerStepMin": round(min(per_step), 3), "msPerStepMax": round(max(per_step), 3)}
    print(f"{sdk:<9} {result['msPerStepP50']:.3f} ms/step (min {result['msPerStepMin']:.3f}, "
          f"max {result['msPerStepMax']:.3f})", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflow_steps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps per workflow (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured runs per SDK (default 5)")
    args = parser.parse_args(argv)
    server = Flowmill()
    try:
        report = {sdk: measure(server, sdk, args.steps, args.rounds) for sdk in WORKFLOWS}
    finally:
        server.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
