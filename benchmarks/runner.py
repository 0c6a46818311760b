"""`python -m benchmarks`: every scenario against Flowmill and against the reference, side by
side in one run, printed as JSON (progress goes to stderr)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from benchmarks import load as wrk
from benchmarks.scenarios import SCENARIOS
from benchmarks.servers import Flowmill, start_reference


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--json-out", help="also write the JSON here")
    args = parser.parse_args(argv)
    wrk.wrk_path()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]

    reference = start_reference()
    flowmill = Flowmill()
    try:
        memory = flowmill.idle_memory_mb()
        report: dict[str, object] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "startup": {"readyMs": round(flowmill.ready_ms, 1), **memory},
            "scenarios": [],
        }
        say(f"flowmill ready in {flowmill.ready_ms:.0f} ms, idle: server RSS {memory['serverRssMb']} MB, "
            f"PSS of its {memory['processes']} processes {memory['treePssMb']} MB")
        for scenario in chosen:
            scenario.prepare(flowmill)
            results = {}
            for name, url, load in (
                ("reference", reference.url, scenario.reference),
                ("flowmill", flowmill.url, scenario.load(flowmill)),
            ):
                wrk.run(url, load, scenario.connections, args.warmup)
                results[name] = wrk.run(url, load, scenario.connections, args.duration)
                say(f"{scenario.name:<24} {name:<9} {results[name].rps:>9.0f} req/s  p50 {results[name].p50_ms:7.2f} ms  p99 {results[name].p99_ms:7.2f} ms")
            ours, ref = results["flowmill"], results["reference"]
            entry = {
                "name": scenario.name, "connections": scenario.connections,
                "flowmill": ours.as_json(), "reference": ref.as_json(),
                "ratioRps": round(ours.rps / ref.rps, 3), "p50Ratio": round(ours.p50_ms / ref.p50_ms, 2),
            }
            if ours.non_2xx or ours.socket_errors or ref.non_2xx or ref.socket_errors:
                entry["errors"] = "some responses were not 2xx or sockets failed: the figures are suspect"
            report["scenarios"].append(entry)  # type: ignore[attr-defined]
    finally:
        flowmill.stop()
        reference.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as out:
            out.write(text + "\n")
    return 0
