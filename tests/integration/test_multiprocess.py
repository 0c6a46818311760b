"""Two `flowmill serve` processes on one PostgreSQL schema, each with its own home and port:
a cancel sent to either stops a run executing on the other within 2 s; `kill -9` of one
leaves its RUNNING runs recovered by the other within the stated time (DEAD_AFTER_S +
HEARTBEAT_S); 10,000 queued runs are each run exactly once across the two. PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.engine import queue
from app.engine.executor import now_ms
from app.engine.queue import NewRun, Policy
from app.engine.workers import DEAD_AFTER_S, HEARTBEAT_S
from app.store.postgres import PostgresDatabase
from tests.conftest import backends
from tests.support import FlowmillServer, wait_for

pytestmark = pytest.mark.skipif("postgres" not in backends(), reason="several processes share PostgreSQL only")

SLEEPER = "import time\ndef main():\n    time.sleep(60)\n"
RETRIED = (
    "import time, wmill\ndef main():\n    n = (wmill.get_state() or 0) + 1\n    wmill.set_state(n)\n"
    "    if n == 1:\n        time.sleep(60)\n    return n\n"
)


def _second(first: FlowmillServer, env: dict[str, str] | None = None) -> FlowmillServer:
    """Another process on `first`'s schema, with a home of its own holding the same keys (the
    master key decrypts what is stored; the JWT key makes a token good on both)."""
    second = FlowmillServer("postgres", env={**(env or {}), "FLOWMILL_DATABASE_URL": first.database_url})
    second.schema = first.schema
    for key in ("master.key", "jwt.key"):
        shutil.copy2(first.home / key, second.home / key)
    return second


@pytest.fixture
def cluster(postgres: None) -> Iterator[list[FlowmillServer]]:
    """Servers sharing one schema (the first one's, dropped once at the end)."""
    servers: list[FlowmillServer] = []
    yield servers
    for server in servers[1:]:
        server.schema = None
        server.close()
    if servers:
        servers[0].close()


def _start_pair(cluster: list[FlowmillServer], env: dict[str, str] | None = None) -> tuple[FlowmillServer, FlowmillServer, str]:
    first = FlowmillServer("postgres", env=env)
    cluster.append(first)
    first.start()
    token = first.admin_token()
    second = _second(first, env)
    cluster.append(second)
    second.start()
    return first, second, token


def _save(server: FlowmillServer, token: str, path: str, content: str, **settings: object) -> dict[str, object]:
    with server.client(token) as api:
        response = api.post("/api/v1/scripts", json={"path": path, "content": content, **settings})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _start_run(server: FlowmillServer, token: str, path: str) -> str:
    with server.client(token) as api:
        response = api.post(f"/api/v1/jobs/run/p/{path}", json={})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def _carrier(server: FlowmillServer, job_id: str) -> str | None:
    """The worker id of the process carrying a RUNNING run, once it runs."""
    rows = server.query("SELECT status, worker FROM job WHERE id = $1", job_id)
    return rows[0][1] if rows and rows[0][0] == "RUNNING" and rows[0][1] else None


def _pid(worker: str) -> int:
    return int(worker.split(":")[1])


def _status(server: FlowmillServer, job_id: str) -> str:
    return server.query("SELECT status FROM job WHERE id = $1", job_id)[0][0]


def test_a_cancel_sent_to_either_stops_a_run_on_the_other_within_2_s(cluster: list[FlowmillServer]) -> None:
    first, second, token = _start_pair(cluster)
    by_pid = {first.process.pid: first, second.process.pid: second}  # type: ignore[union-attr]
    _save(first, token, "f/mp/sleep", SLEEPER)
    latencies: dict[str, list[float]] = {"notified": [], "fallback": []}
    directions: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 90
    # Until each process has cancelled a run carried by the other, three times each way.
    while len(latencies["notified"]) < 6 and time.monotonic() < deadline:
        job_id = _start_run((first, second)[len(latencies["notified"]) % 2], token, "f/mp/sleep")
        carrier = wait_for(lambda: _carrier(first, job_id), 15, "the run starting")
        time.sleep(0.3)  # its child is asleep in main
        runs_on = by_pid[_pid(carrier)]
        other = second if runs_on is first else first
        started = time.monotonic()
        with other.client(token) as api:
            assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        wait_for(lambda: _status(first, job_id) == "CANCELLED", 2, "the cancel stopping the run on the other process")
        latencies["notified"].append(time.monotonic() - started)
        directions.add((other.process.pid, runs_on.process.pid))  # type: ignore[union-attr]
        error = first.query("SELECT error FROM job WHERE id = $1", job_id)[0][0]
        assert "cancelled by admin" in error, error  # the reason travelled with the notification
    assert len(directions) == 2, "both ways"
    # A lost notification: only the durable mark, as the API writes it; the carrier reads it on its poll.
    for _ in range(3):
        job_id = _start_run(first, token, "f/mp/sleep")
        wait_for(lambda: _carrier(first, job_id), 15, "the run starting")
        time.sleep(0.3)
        started = time.monotonic()
        first.query("UPDATE job SET cancel_requested = 1 WHERE id = $1 RETURNING id", job_id)
        wait_for(lambda: _status(first, job_id) == "CANCELLED", 2, "the durable cancel stopping the run")
        latencies["fallback"].append(time.monotonic() - started)
    print(f"\ncancel latency across processes (s): notified {[round(x, 3) for x in latencies['notified']]}, "
          f"median {statistics.median(latencies['notified']):.3f}; without the notification "
          f"{[round(x, 3) for x in latencies['fallback']]}")


def test_kill_9_of_one_leaves_its_runs_recovered_by_the_other(cluster: list[FlowmillServer]) -> None:
    doomed = FlowmillServer("postgres")
    cluster.append(doomed)
    doomed.start()
    token = doomed.admin_token()
    _save(doomed, token, "f/mp/sleep", SLEEPER)
    for n in range(2):
        _save(doomed, token, f"f/mp/retried{n}", RETRIED, retry={"attempts": 1, "backoffS": 0.1})
    # Started while the doomed process is alone: it carries them all.
    lost = [_start_run(doomed, token, "f/mp/sleep") for _ in range(2)]
    retried = [_start_run(doomed, token, f"f/mp/retried{n}") for n in range(2)]
    with doomed.client(token) as api:
        wait_for(lambda: all(_carrier(doomed, job_id) for job_id in lost + retried)
                 and all(api.get(f"/api/v1/resources/p/f/mp/retried{n}/state").status_code == 200 for n in range(2)),
                 15, "every run started on the doomed process")
    doomed_worker = _carrier(doomed, lost[0])
    assert doomed_worker is not None and _pid(doomed_worker) == doomed.process.pid  # type: ignore[union-attr]
    survivor = _second(doomed)
    cluster.append(survivor)
    survivor.start()
    assert survivor.count("worker") == 2
    killed = time.monotonic()
    doomed.kill9()
    bound = DEAD_AFTER_S + HEARTBEAT_S + 1  # the stated time, and a second to claim and answer

    def recovered() -> bool:
        return all(_status(survivor, job_id) == "FAILED" for job_id in lost)

    wait_for(recovered, bound + 2, "the runs of the killed process recovered")
    recovery_s = time.monotonic() - killed
    for job_id in lost:
        error = survivor.query("SELECT error FROM job WHERE id = $1", job_id)[0][0]
        assert '"WorkerLost"' in error and "stopped" in error, error
    with survivor.client(token) as api:
        for job_id in retried:
            wait_for(lambda: api.get(f"/api/v1/jobs/{job_id}").json()["status"] in ("SUCCESS", "FAILED"), 30,
                     "the retried run ending")
            job = api.get(f"/api/v1/jobs/{job_id}").json()
            assert job["status"] == "SUCCESS" and job["result"] == 2 and job["attempt"] == 2, job
    rerun_by = {row[0] for row in survivor.query("SELECT worker FROM job WHERE id = ANY($1::text[])", retried)}
    assert survivor.count("worker") == 1 and survivor.count("worker", "id = $1", doomed_worker) == 0
    print(f"\nrecovered {len(lost + retried)} runs of the killed process in {recovery_s:.2f} s "
          f"(bound {DEAD_AFTER_S:g} s dead-after + {HEARTBEAT_S:g} s heartbeat); re-run by {rerun_by}")
    assert DEAD_AFTER_S - HEARTBEAT_S - 0.5 <= recovery_s <= bound, recovery_s


def test_10000_queued_runs_are_each_run_exactly_once_across_two(cluster: list[FlowmillServer]) -> None:
    count = 10_000
    with tempfile.TemporaryDirectory(prefix="flowmill-mp-") as folder:
        ledger = Path(folder) / "ran.txt"
        # The side effect: each run appends its id to one file (outside any sandbox: the wall
        # would keep a run to its own folder).
        # All 10,000 runs are of one script: retention (the newest 1,000 of a script) is off here.
        first, second, token = _start_pair(cluster, {"FLOWMILL_SANDBOX": "off", "FLOWMILL_RETENTION_RUNS_PER_SCRIPT": "0"})
        script = (
            "import os\ndef main():\n"
            f"    fd = os.open({str(ledger)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)\n"
            "    os.write(fd, (os.environ['WM_JOB_ID'] + '\\n').encode())\n    os.close(fd)\n"
        )
        version = _save(first, token, "f/mp/once", script)
        ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(count)]

        async def enqueue() -> float:
            """The runs queued as `Jobs.enqueue` queues them (the queue's own statements), in
            commits of 500, each announced."""
            db = PostgresDatabase(first.database_url)
            await db.open()
            try:
                began = time.monotonic()
                for start in range(0, count, 500):
                    now = now_ms()
                    await db.write(*(queue.insert(NewRun(
                        id=job_id, workspace="main", kind="script", path="f/mp/once", args="{}", status="QUEUED",
                        trigger_kind="api", trigger_detail="", created_by="admin", created_at=now, scheduled_for=now,
                        policy=Policy(), script_hash=str(version["hash"]),
                    )) for job_id in ids[start:start + 500]), *queue.announce("postgres"))
                return time.monotonic() - began
            finally:
                await db.close()

        started = time.monotonic()
        insert_s = asyncio.run(enqueue())
        done = lambda: first.count("job", "status IN ('SUCCESS', 'FAILED', 'CANCELLED', 'TIMED_OUT')") == count  # noqa: E731
        wait_for(done, 150, "10,000 runs final")
        elapsed = time.monotonic() - started
        statuses = dict(first.query("SELECT status, count(*) FROM job GROUP BY status"))
        assert statuses == {"SUCCESS": count}, statuses
        assert first.count("job", "attempt <> 1") == 0
        lines = ledger.read_text().split()
        assert len(lines) == count, f"{len(lines) - count:+d} side effects"
        assert set(lines) == set(ids), "no run missing, none foreign"
        by_worker = dict(first.query("SELECT worker, count(*) FROM job GROUP BY worker"))
        assert len(by_worker) == 2 and min(by_worker.values()) > 0, by_worker
        with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {token}"}) as api:
            assert api.get("/readyz").status_code == 200
        print(f"\n{count} runs queued in {insert_s:.1f} s and carried in {elapsed:.1f} s "
              f"({count / elapsed:.0f} runs/s): each exactly once (job table and ledger); by process {by_worker}")


def test_a_path_belongs_to_one_workspace_whichever_process_takes_it(cluster: list[FlowmillServer]) -> None:
    """Two workspaces claim overlapping paths at the same moment through two processes (a
    parameter against a literal, two methods: only the overlap check, not the unique index,
    tells them apart): each time exactly one gets it."""
    import threading

    first, second, token = _start_pair(cluster)
    with first.client(token) as api:
        assert api.post("/api/v1/workspaces", json={"id": "other", "name": "Other"}).status_code == 201
    rounds = 20
    answers: list[tuple[int, int]] = []
    for n in range(rounds):
        barrier = threading.Barrier(2)
        got: dict[str, int] = {}

        def create(server: FlowmillServer, prefix: str, path: str, method: str) -> None:
            with server.client(token) as api:
                barrier.wait()
                got[prefix] = api.post(f"/api/v1{prefix}/routes", json={
                    "path": path, "method": method, "runnable": {"kind": "script", "path": "f/mp/x"}}).status_code

        threads = [threading.Thread(target=create, args=(first, "", f"mp/r{n}/:id", "GET")),
                   threading.Thread(target=create, args=(second, "/w/other", f"mp/r{n}/x", "POST"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        answers.append((got[""], got["/w/other"]))
    assert all(sorted(pair) == [201, 409] for pair in answers), answers
    owners = first.query("SELECT split_part(path, '/', 2), count(DISTINCT workspace_id) FROM route GROUP BY 1")
    assert len(owners) == rounds and all(count == 1 for _, count in owners), owners


def test_a_process_taken_for_dead_does_not_write_over_what_its_run_became(cluster: list[FlowmillServer]) -> None:
    """SIGSTOP past DEAD_AFTER_S: the other process recovers its run (FAILED WorkerLost); woken
    again, the stalled one finds it was taken for dead, and its run's outcome is not recorded."""
    import os
    import signal

    stalled = FlowmillServer("postgres")
    cluster.append(stalled)
    stalled.start()
    token = stalled.admin_token()
    _save(stalled, token, "f/mp/short", "import time\ndef main():\n    time.sleep(16)\n    return 'late'\n")
    job_id = _start_run(stalled, token, "f/mp/short")
    wait_for(lambda: _carrier(stalled, job_id), 15, "the run starting")
    other = _second(stalled)
    cluster.append(other)
    other.start()
    os.kill(stalled.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        wait_for(lambda: _status(other, job_id) == "FAILED", DEAD_AFTER_S + HEARTBEAT_S + 3, "the recovery")
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
    wait_for(lambda: "its outcome here, SUCCESS, is not recorded" in stalled.output(), 20, "the stalled run ending")
    assert "was taken for dead" in stalled.output()
    status, error = other.query("SELECT status, error FROM job WHERE id = $1", job_id)[0]
    assert status == "FAILED" and "WorkerLost" in error
    wait_for(lambda: other.count("worker") == 2, 5, "the stalled process registered again")


def test_an_instance_whose_process_stops_answering_is_unknown_then_recovered(cluster: list[FlowmillServer]) -> None:
    """The ninth status of the instances API: a running workflow instance whose process is
    silent (SIGSTOP) shows as `unknown` on the other process, until that one recovers it and
    runs it to its end (a workflow resumes from its steps)."""
    import os
    import signal

    stalled = FlowmillServer("postgres")
    cluster.append(stalled)
    stalled.start()
    token = stalled.admin_token()
    _save(stalled, token, "f/mp/slowflow", "import time\nfrom flowmill import workflow, step\n\n@workflow\ndef main():\n"
          "    step('wait', lambda: time.sleep(8) or 1)\n    return 'done'\n")
    with stalled.client(token) as api:
        assert api.post("/api/workflows/f.mp.slowflow/instances", json={"id": "silent-1"}).status_code == 201
    wait_for(lambda: _carrier(stalled, "silent-1"), 15, "the instance running")
    other = _second(stalled)
    cluster.append(other)
    other.start()
    os.kill(stalled.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        with other.client(token) as api:
            def status() -> str:
                return api.get("/api/workflows/f.mp.slowflow/instances/silent-1").json()["status"]
            wait_for(lambda: status() == "unknown", DEAD_AFTER_S, "the instance shown as unknown")
            wait_for(lambda: status() == "complete", DEAD_AFTER_S + HEARTBEAT_S + 20, "the recovery and the end")
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
