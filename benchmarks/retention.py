"""`python -m benchmarks.retention`: does a SQLite install stay bounded under retention?

200,000 small finished runs with 3 log lines each are written through the store (the same
`SQLiteDatabase` and its writer the server uses), their times spread over 90 simulated days,
while retention runs in the background as in a serving process (`app.engine.retention.Retention`,
at its default policy: 30 days, 1,000 runs per script, audit 365 days), its clock the
simulated one. 100 scripts share 80% of the runs and one hot script takes 20%, so both the
age rule and the count rule bite. Meanwhile a probe makes one small write every 10 ms, as a
request would, and times it.

Prints JSON: the file and WAL size at the end of every simulated day, the largest file + WAL
once the first 30 days are past (the bound), the size after the last pass, and the probe's
latency with and without a pass under way. Stops by itself: at the end of the load, or after
`--budget-s` (default 540 s), saying so (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from app.config import load_settings
from app.engine.retention import DAY_MS, Retention
from app.services import retention_policy
from app.store.base import Statement
from app.store.migrate import prepare
from app.store.sqlite import SQLiteDatabase

START_MS = 1_790_000_000_000  # the simulated day 0
SCRIPTS = 100
HOT_SHARE = 0.2
PER_WRITE = 100  # runs per write (and their lines): one simulated hour is ~93 runs
PROBE_S = 0.01
JOB_COLUMNS = ("id, workspace_id, kind, path, script_hash, args, status, result, trigger_kind, request_id, "
               "created_by, created_at, scheduled_for, started_at, finished_at, worker")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _runs(first: int, count: int, total: int, days: int) -> tuple[list[Statement], int]:
    """Statements writing runs first..first+count (finished, with their lines); the simulated
    time of the last one."""
    span = days * DAY_MS / total
    run_values, run_args, line_values, line_args = [], [], [], []
    at = START_MS
    for k in range(first, first + count):
        at = int(START_MS + k * span)
        script = "f/bench/hot" if (k * 7919) % 100 < HOT_SHARE * 100 else f"f/bench/s{k % SCRIPTS:03d}"
        job_id = str(uuid.UUID(int=k + 1))
        n = len(run_args)
        run_values.append("(" + ", ".join(f"${n + i}" for i in range(1, 17)) + ")")
        run_args += [job_id, "main", "script", script, f"{k:032x}", f'{{"n": {k}}}', "SUCCESS",
                     f'{{"ok": true, "n": {k}}}', "api", uuid.uuid4().hex, "bench", at - 40, at - 40, at - 30, at,
                     "bench-host:4242"]
        for i in range(3):
            m = len(line_args)
            line_values.append(f"(${m + 1}, ${m + 2}, ${m + 3}, ${m + 4})")
            line_args += [job_id, at - 30 + i, "stdout", f"step {i} of run {k}: processed {k % 97} items"]
    return [Statement(f"INSERT INTO job ({JOB_COLUMNS}) VALUES {', '.join(run_values)}", run_args),
            Statement(f"INSERT INTO job_log (job_id, ts, stream, line) VALUES {', '.join(line_values)}", line_args)], at


def _sizes(path: Path) -> tuple[int, int]:
    wal = Path(f"{path}-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2), "max_ms": round(ordered[-1] * 1000, 2)}


class Probe:
    """One small write every PROBE_S, timed, split by whether a pass is under way."""

    def __init__(self, db: SQLiteDatabase, keeper: Retention) -> None:
        self.db, self.keeper = db, keeper
        self.quiet: list[float] = []
        self.pruning: list[float] = []

    async def run(self) -> None:
        n = 0
        while True:
            n += 1
            busy = self.keeper.busy
            started = time.perf_counter()
            await self.db.write(Statement(
                "INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
                "VALUES ('main', 'probe', $1, '1', 'bench', 0, 0) ON CONFLICT DO NOTHING", (f"k{n % 1000}",)))
            (self.pruning if busy or self.keeper.busy else self.quiet).append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_S)


class TimedRetention(Retention):
    """Retention as the server runs it, saying when a pass is under way (for the probe)."""

    busy = False

    async def run_pass(self):  # type: ignore[no-untyped-def]
        self.busy = True
        try:
            return await super().run_pass()
        finally:
            self.busy = False


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.budget_s
    with tempfile.TemporaryDirectory(prefix="flowmill-retention-") as home:
        settings = load_settings({"FLOWMILL_HOME": home})
        db = await prepare(settings)
        assert isinstance(db, SQLiteDatabase)
        clock = {"ms": START_MS}
        policy = retention_policy(settings)
        keeper = TimedRetention(db, policy, interval_s=args.interval_s, clock=lambda: clock["ms"] / 1000)
        keeper.start()
        probe = Probe(db, keeper)
        probing = asyncio.get_running_loop().create_task(probe.run())
        days: list[dict[str, Any]] = []
        started = time.monotonic()
        written, day, complete = 0, 0, True
        try:
            while written < args.runs:
                if time.monotonic() > deadline:
                    complete = False
                    say(f"budget of {args.budget_s} s spent after {written} runs: stopping")
                    break
                due = started + args.seconds * written / args.runs  # paced: simulated time flows evenly
                if time.monotonic() < due:
                    await asyncio.sleep(due - time.monotonic())
                count = min(PER_WRITE, args.runs - written)
                statements, at = _runs(written, count, args.runs, args.days)
                await db.write(*statements)
                written += count
                clock["ms"] = at
                while at >= START_MS + (day + 1) * DAY_MS or written == args.runs:
                    day += 1
                    size, wal = _sizes(db.path)
                    row = {"day": day, "runs_written": written, "runs_kept": await db.fetchval("SELECT count(*) FROM job"),
                           "file_mib": round(size / 2**20, 2), "wal_mib": round(wal / 2**20, 2),
                           "total_mib": round((size + wal) / 2**20, 2), "elapsed_s": round(time.monotonic() - started, 1)}
                    days.append(row)
                    if day % 10 == 0 or written == args.runs:
                        say(json.dumps(row))
                    if written == args.runs:
                        break
            load_s = time.monotonic() - started
            await keeper.stop()
            final_pass = await keeper.run_pass()  # what a pass at the end of day 90 leaves
        finally:
            probing.cancel()
            await keeper.stop()
        size, wal = _sizes(db.path)
        runs_kept = await db.fetchval("SELECT count(*) FROM job")
        lines_kept = await db.fetchval("SELECT count(*) FROM job_log")
        await db.close()
    steady = [d for d in days if d["day"] > policy.run_days]
    return {
        "scenario": "retention",
        "complete": complete,
        "runs": written, "log_lines": written * 3, "simulated_days": args.days,
        "policy": {"run_days": policy.run_days, "runs_per_script": policy.runs_per_script,
                   "audit_days": policy.audit_days, "pass_every_s": args.interval_s,
                   "pass_every_simulated_h": round(args.interval_s / args.seconds * args.days * 24, 1)},
        "load_s": round(load_s, 1), "runs_per_s": round(written / load_s),
        "passes": keeper.passes, "pruned": {"runs": keeper.totals.runs, "log_lines": keeper.totals.log_lines,
                                             "transactions": keeper.totals.transactions},
        "largest_total_mib_after_day_30": max((d["total_mib"] for d in steady), default=None),
        "largest_total_mib": max(d["total_mib"] for d in days) if days else None,
        "final": {"file_mib": round(size / 2**20, 2), "wal_mib": round(wal / 2**20, 2), "runs_kept": runs_kept,
                  "log_lines_kept": lines_kept, "last_pass_pruned_runs": final_pass.runs},
        "probe_write": {"no_pass_under_way": _ms(probe.quiet), "pass_under_way": _ms(probe.pruning)},
        "days": days,
        "python": sys.version.split()[0], "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=90, help="simulated days the runs are spread over")
    parser.add_argument("--seconds", type=float, default=240, help="real seconds the load is paced to take")
    parser.add_argument("--interval-s", type=float, default=0.5, help="real seconds between retention passes")
    parser.add_argument("--budget-s", type=float, default=540, help="stop after this long whatever is left")
    args = parser.parse_args(argv)
    report = asyncio.run(bench(args))
    print(json.dumps(report, indent=2))
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
