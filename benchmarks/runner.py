"""`python -m benchmarks`: every scenario against Flowmill and against the reference, side by
side in one run, printed as JSON (progress goes to stderr).

Exits with 1 when some run had non-2xx responses or socket errors (its scenario lists them
under "errors"): such figures measure failures, not Flowmill.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
from typing import Any

from benchmarks import load as wrk
from benchmarks.scenarios import REFERENCES, SCENARIOS, Scenario
from benchmarks.servers import Flowmill, start_reference


def say(text: str) -> None:
    """A progress line, on stderr."""
    print(text, file=sys.stderr, flush=True)


def _measure(side: str, scenario: Scenario, url: str, load: wrk.Load,
             args: argparse.Namespace) -> tuple[wrk.Measure, int]:
    """A warm-up run, then the measured one; and how many requests of both were accepted (2xx)."""
    warm = wrk.run(url, load, scenario.connections, args.warmup)
    measure = wrk.run(url, load, scenario.connections, args.duration)
    say(f"{scenario.name:<18} {side:<9} {measure.rps:>9.0f} req/s  p50 {measure.p50_ms:7.2f} ms  "
        f"p99 {measure.p99_ms:7.2f} ms" + ("  ERRORS" if measure.failed else ""))
    return measure, warm.requests - warm.non_2xx + measure.requests - measure.non_2xx


def _runs(before: dict[str, int], after: dict[str, int], accepted: int,
          connections: int) -> tuple[dict[str, Any], list[str]]:
    """The runs a scenario started and how they ended, once none is queued or running: each
    accepted request of a scenario that runs something must have started one run (the kv
    scenarios start none), and none may have ended other than SUCCESS. wrk does not count the
    requests in flight when it stops (at most one per connection, twice: warm-up and measure),
    which may have started runs. Retention may delete finished runs meanwhile: the SUCCESS
    figure can fall short of "started" without a run being lost."""
    made = {status: after.get(status, 0) - before.get(status, 0) for status in after}
    started = made.pop("started", 0)
    if not started:
        return {}, []
    problems = [f"{count} runs ended {status}" for status, count in made.items() if status != "SUCCESS" and count > 0]
    if not accepted <= started <= accepted + 2 * connections:
        problems.append(f"{accepted} requests accepted, {started} runs started")
    return {"accepted": accepted, "started": started, **{s: n for s, n in made.items() if n}}, problems


def _errors(measures: dict[str, wrk.Measure]) -> list[str]:
    return [f"{side}: {m.non_2xx} non-2xx responses, {m.socket_errors} socket errors"
            for side, m in measures.items() if m.failed]


def _choose(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - {s.name for s in SCENARIOS})
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SCENARIOS)}")
    return [s for s in SCENARIOS if s.name in names]


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the servers are stopped


def run(chosen: list[Scenario], args: argparse.Namespace) -> dict[str, Any]:
    """Start both servers, run `chosen`, stop the servers whatever happens; the report."""
    with contextlib.ExitStack() as cleanup:
        say("starting the reference and Flowmill")
        reference = start_reference()
        cleanup.callback(reference.stop)
        flowmill = Flowmill()
        cleanup.callback(flowmill.stop)
        memory = flowmill.memory
        say(f"flowmill ready in {flowmill.ready_ms:.0f} ms; idle: RSS {memory['idleRssMb']} MB, "
            f"{memory['children']} children {memory['childrenRssMb']} MB RSS, tree PSS {memory['treePssMb']} MB")
        report: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "startup": {"readyMs": round(flowmill.ready_ms, 1), **memory},
            "scenarios": [],
        }
        # Each (reference endpoint, connections) is measured once per run, just before the
        # first scenario compared with it.
        references: dict[tuple[str, int], wrk.Measure] = {}
        for scenario in chosen:
            scenario.prepare(flowmill)
            key = (scenario.reference, scenario.connections)
            if key not in references:
                references[key], _ = _measure("reference", scenario, reference.url, REFERENCES[scenario.reference], args)
            ref = references[key]
            before = flowmill.run_counts()
            ours, accepted = _measure("flowmill", scenario, flowmill.url, scenario.load(flowmill), args)
            waited = flowmill.wait_idle()
            if waited > 1:
                say(f"{scenario.name}: the runs it queued took {waited:.0f} s more to finish")
            runs, unfinished = _runs(before, flowmill.run_counts(), accepted, scenario.connections)
            if runs:
                say(f"{scenario.name}: runs {runs}" + (f"  PROBLEMS: {'; '.join(unfinished)}" if unfinished else ""))
            report["scenarios"].append({
                "name": scenario.name, "connections": scenario.connections,
                "flowmill": ours.as_json(), "reference": ref.as_json(),
                "ratioRps": round(ours.rps / ref.rps, 3) if ref.rps else None,
                "p50Ratio": round(ours.p50_ms / ref.p50_ms, 2) if ref.p50_ms else None,
                "drainedS": round(waited, 1), "runs": runs,
                "errors": _errors({"flowmill": ours, "reference": ref}) + unfinished,
            })
    return report


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--only", help=f"comma-separated scenario names ({', '.join(s.name for s in SCENARIOS)})")
    parser.add_argument("--json-out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    wrk.wrk_path()
    chosen = _choose(args.only)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        report = run(chosen, args)
    except KeyboardInterrupt:
        say("interrupted; the servers are stopped")
        return 130
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as out:
            out.write(text + "\n")
    failed = [s["name"] for s in report["scenarios"] if s["errors"]]
    if failed:
        say(f"WARNING: errors in {', '.join(failed)}: their figures measure failures (see \"errors\")")
        return 1
    return 0
