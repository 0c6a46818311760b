"""Retention in a serving process: old finished runs, their logs and old audit entries go in the
background while the server answers; unfinished runs and what is recent stay."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support import FlowmillServer, wait_for

DAY_MS = 86_400_000
JOB = ("INSERT INTO job (id, workspace_id, kind, path, args, status, trigger_kind, created_by, created_at, "
       "scheduled_for, finished_at) VALUES ($1, $2, 'script', $3, '{}', $4, 'api', 'test', $5, $6, $7)")
LINE = "INSERT INTO job_log (job_id, ts, stream, line) VALUES ($1, $2, 'stdout', $3)"
AUDIT = ("INSERT INTO audit_entry (at, workspace_id, actor, action, target, outcome, status, request_id) "
         "VALUES ($1, 'main', 'test', 'kv.put', $2, 'success', 200, 'r')")
FAR = 4_102_444_800_000  # 2100: a queued run nobody will start during the test
SCRIPT = {"path": "f/keep/hello", "content": "def main():\n    print('kept line')\n    return 1\n"}


def _server(backend: str, **settings: str) -> FlowmillServer:
    env = {"FLOWMILL_RETENTION_INTERVAL_S": "1"}
    env.update({f"FLOWMILL_{k.upper()}": v for k, v in settings.items()})
    return FlowmillServer(backend, env=env)


def _runs(server: FlowmillServer, rows: list[tuple[Any, ...]], lines: int = 3) -> None:
    """Runs and their log lines, in one transaction (a pass never sees one without the other)."""
    now = int(time.time() * 1000)
    server.write_rows((JOB, rows), (LINE, [(row[0], now, f"line {i}") for row in rows for i in range(lines)]))


def _passes(server: FlowmillServer, token: str) -> int:
    with server.client(token) as client:
        text = client.get("/metrics").text
    found = re.search(r"^flowmill_retention_passes_total (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def _ids(server: FlowmillServer) -> set[str]:
    return {row[0] for row in server.query("SELECT id FROM job")}


def test_old_finished_runs_and_their_logs_are_pruned_while_serving(backend: str) -> None:
    server = _server(backend, retention_days="30", retention_runs_per_script="0", audit_retention_days="0")
    try:
        server.start()
        token = server.admin_token()
        with server.client(token) as client:
            assert client.post("/api/v1/scripts", json=SCRIPT).status_code == 201
            answer = client.post("/api/v1/jobs/run_wait_result/p/f/keep/hello", json={})
            assert answer.status_code == 200, answer.text
        real = server.query("SELECT id FROM job")[0][0]
        now = int(time.time() * 1000)
        old = now - 40 * DAY_MS
        rows = [(f"old-{s}-{i}", "main", "f/a/b", s, old, old, old + i)
                for s in ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT") for i in range(300)]
        rows += [(f"recent-{i}", "main", "f/a/b", "SUCCESS", now, now, now - DAY_MS) for i in range(10)]
        rows += [("queued", "main", "f/a/b", "QUEUED", old, FAR, None), ("running", "main", "f/a/b", "RUNNING", old, old, None),
                 ("waiting", "main", "f/a/b", "WAITING", old, old, None), ("paused", "main", "f/a/b", "PAUSED", old, old, None)]
        _runs(server, rows)
        server.write_rows((AUDIT, [(old, f"old {i}") for i in range(20)]))

        wait_for(lambda: not any(i.startswith("old-") for i in _ids(server)), 30, "pruning the old runs")
        kept = {"queued", "running", "waiting", "paused", real, *(f"recent-{i}" for i in range(10))}
        assert _ids(server) == kept
        assert {row[0] for row in server.query("SELECT DISTINCT job_id FROM job_log")} == kept  # lines went with their runs
        assert server.count("job_log", "job_id = 'queued'") == 3
        assert server.count("audit_entry", "target LIKE 'old %'") == 20  # audit retention is off
        with server.client(token) as client:  # the server answered throughout, and still runs
            assert client.get(f"/api/v1/jobs/{real}").json()["status"] == "SUCCESS"
            assert client.post("/api/v1/jobs/run_wait_result/p/f/keep/hello", json={}).status_code == 200
            # The pass counts what it pruned once it is over (its audit batches and vacuum come after the runs).
            def counted() -> str | None:
                metrics = client.get("/metrics").text
                return None if "flowmill_retention_passes_total 0" in metrics else metrics

            text = wait_for(counted, 30, "the retention pass to end")
        assert re.search(r'^flowmill_retention_pruned_total\{what="runs"\} 1200$', text, re.M), text
        assert re.search(r'^flowmill_retention_pruned_total\{what="log_lines"\} 3600$', text, re.M), text
        assert "retention: pruned" in server.output()
    finally:
        server.close()


def test_runs_past_the_count_per_script_and_old_audit_entries_go(backend: str) -> None:
    server = _server(backend, retention_days="0", retention_runs_per_script="5", audit_retention_days="10")
    try:
        server.start()
        server.admin_token()
        now = int(time.time() * 1000)
        rows = [(f"a-{i:02d}", "main", "f/a", "SUCCESS", now - i, now - i, now - i * 1000) for i in range(20)]
        rows += [(f"b-{i}", "main", "f/b", "FAILED", now, now, now - i) for i in range(3)]
        rows += [(f"w-{i}", "ops", "f/a", "SUCCESS", now, now, now - i) for i in range(7)]
        rows += [("a-queued", "main", "f/a", "QUEUED", now - 10**9, FAR, None)]
        _runs(server, rows)
        server.write_rows((AUDIT, [(now - 11 * DAY_MS, "older"), (now - 9 * DAY_MS, "newer")]))
        expected = {*(f"a-{i:02d}" for i in range(5)), "a-queued", "b-0", "b-1", "b-2", *(f"w-{i}" for i in range(5))}
        wait_for(lambda: _ids(server) == expected, 30, "keeping the newest 5 of each runnable")
        assert {row[0] for row in server.query("SELECT DISTINCT job_id FROM job_log")} == expected
        wait_for(lambda: server.count("audit_entry", "target = 'older'") == 0, 10, "pruning the old audit entry")
        assert server.count("audit_entry", "target = 'newer'") == 1
    finally:
        server.close()


def test_zero_turns_retention_off(backend: str) -> None:
    server = _server(backend, retention_days="0", retention_runs_per_script="0", audit_retention_days="0")
    try:
        server.start()
        token = server.admin_token()
        old = int(time.time() * 1000) - 5000 * DAY_MS
        _runs(server, [(f"r{i}", "main", "f/a", "SUCCESS", old, old, old + i) for i in range(20)])
        server.write_rows((AUDIT, [(old, "ancient")]))
        start = _passes(server, token)
        wait_for(lambda: _passes(server, token) >= start + 2, 30, "two retention passes")
        assert server.count("job", "id LIKE 'r%'") == 20
        assert server.count("job_log", "job_id LIKE 'r%'") == 60
        assert server.count("audit_entry", "target = 'ancient'") == 1
    finally:
        server.close()
