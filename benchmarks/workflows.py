"""`python -m benchmarks.workflows`: durable workflows side by side with DBOS Transact on SQLite,
in one run on this machine (printed as JSON; progress on stderr).

- ms per step of a 1,000-step workflow: Flowmill's SDK and Windmill's `wmill` on Flowmill
  (`benchmarks.workflow_steps`), DBOS's `@DBOS.step`s in a `@DBOS.workflow`;
- 200 one-step workflows in sequence, ms each from creation to complete (Flowmill: one
  synchronous run each, `run_wait_result`; DBOS: calling the workflow);
- 500 instances created at once, instances per second until all are complete (Flowmill:
  `POST /api/workflows/{name}/instances/batch` of 100 five times, then waiting for the last;
  DBOS: `start_workflow` 500 times, then every result).

DBOS runs in a virtual environment of its own (`--dbos-python`; made under
`~/.cache/flowmill-bench/dbos` with `pip install dbos` when not given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.servers import Flowmill
from benchmarks.workflow_steps import measure as measure_steps

ONE_STEP = """
from flowmill import workflow, step


@workflow
def main():
    return step("one", lambda: 1)
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dbos_python(given: str | None) -> str:
    """A Python with DBOS installed: `given`, or a venv made once under the user's cache."""
    if given:
        return given
    venv = Path.home() / ".cache" / "flowmill-bench" / "dbos"
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"making {venv} with DBOS (pip install dbos)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "dbos"], check=True)
    return str(python)


def flowmill_side(steps: int, rounds: int, sequential: int, at_once: int) -> dict[str, object]:
    server = Flowmill()
    try:
        report: dict[str, object] = {sdk: measure_steps(server, sdk, steps, rounds) for sdk in ("flowmill", "wmill")}
        server.call("POST", "/api/v1/scripts", json={"path": "f/bench/one", "content": ONE_STEP})
        for _ in range(3):
            server.call("POST", "/api/v1/jobs/run_wait_result/p/f/bench/one", json={})
        each = []
        for _ in range(sequential):
            started = time.perf_counter()
            assert server.call("POST", "/api/v1/jobs/run_wait_result/p/f/bench/one", json={}).json() == 1
            each.append((time.perf_counter() - started) * 1000)
        report["oneStep"] = {"count": sequential, "msP50": round(statistics.median(each), 2),
                             "msMean": round(statistics.mean(each), 2)}
        say(f"flowmill  one-step workflow p50 {report['oneStep']['msP50']} ms")  # type: ignore[index]
        started = time.perf_counter()
        ids = []
        for batch in range(0, at_once, 100):
            items = [{"id": f"burst-{n}"} for n in range(batch, min(batch + 100, at_once))]
            server.call("POST", "/api/workflows/f.bench.one/instances/batch", json={"instances": items})
            ids += [item["id"] for item in items]
        while True:
            page = server.call("GET", "/api/workflows/f.bench.one/instances",
                               params={"status": "complete", "pageSize": 100}).json()
            done = server.call("GET", "/api/v1/jobs", params={"status": "SUCCESS", "kind": "workflow", "limit": 1})
            left = [s for s in ("QUEUED", "RUNNING") if server.call(
                "GET", "/api/v1/jobs", params={"status": s, "kind": "workflow", "limit": 1}).json()["items"]]
            if not left and page and done:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        failed = server.call("GET", "/api/workflows/f.bench.one/instances", params={"status": "errored"}).json()
        report["atOnce"] = {"count": at_once, "instancesPerSecond": round(at_once / elapsed, 1),
                            "errored": len(failed["instances"])}
        say(f"flowmill  {at_once} instances at once: {report['atOnce']['instancesPerSecond']} /s")  # type: ignore[index]
        return report
    finally:
        server.stop()


def dbos_side(python: str, steps: int, rounds: int, sequential: int, at_once: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as folder:
        done = subprocess.run([python, str(Path(__file__).with_name("dbos_side.py")), folder, str(steps), str(rounds),
                               str(sequential), str(at_once)], capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "DBOS__APPVERSION": "bench"})
    if done.returncode != 0:
        raise SystemExit(f"the DBOS side failed: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"dbos      {result['msPerStepP50']} ms/step, one-step p50 {result['oneStepMsP50']} ms, "
        f"{result['instancesPerSecond']} instances/s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--at-once", type=int, default=500)
    parser.add_argument("--dbos-python", help="a Python with `dbos` installed")
    args = parser.parse_args(argv)
    dbos = dbos_side(dbos_python(args.dbos_python), args.steps, args.rounds, args.sequential, args.at_once)
    ours = flowmill_side(args.steps, args.rounds, args.sequential, args.at_once)
    steps_flowmill = ours["flowmill"]["msPerStepP50"]  # type: ignore[index]
    steps_wmill = ours["wmill"]["msPerStepP50"]  # type: ignore[index]
    report = {
        "dbos": dbos, "flowmill": ours,
        "ratios": {
            "flowmillStepVsDbos": round(steps_flowmill / dbos["msPerStepP50"], 3),  # bar: <= 0.333
            "wmillStepVsDbos": round(steps_wmill / dbos["msPerStepP50"], 3),  # bar: <= 1
            "oneStepVsDbos": round(ours["oneStep"]["msP50"] / dbos["oneStepMsP50"], 3),  # type: ignore[index]  # bar: <= 1
            "atOnceVsDbos": round(ours["atOnce"]["instancesPerSecond"] / dbos["instancesPerSecond"], 3),  # type: ignore[index]
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
