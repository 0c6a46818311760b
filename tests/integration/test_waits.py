"""Runs that wait hold no process: a script's sleep, approval and events end its turn WAITING;
the timer, the approval's URL, an event, a resume or a cancel take it on — across a restart too."""

from __future__ import annotations

import os
import time

import httpx

from tests.support import FlowmillServer, wait_for

SLEEPER = """
import flowmill

def compute():
    print("computing before the sleep")
    return 20

def main(seconds: float = 1.5):
    before = flowmill.step("before", compute)
    flowmill.sleep(seconds)
    return before + 1
"""

APPROVAL = """
import flowmill

def main():
    answer = flowmill.wait_for_approval("manager")
    return {"approved": answer["approved"], "payload": answer["payload"]}
"""

EVENTS = """
import flowmill

def main():
    first = flowmill.wait_for_event("paid")
    second = flowmill.wait_for_event("paid")
    return [first["payload"], second["payload"]]
"""


def _save(client: httpx.Client, path: str, content: str) -> None:
    answer = client.post("/api/v1/scripts", json={"path": path, "content": content})
    assert answer.status_code in (200, 201), answer.text


def _status(client: httpx.Client, job_id: str, *statuses: str, timeout_s: float = 30) -> dict:
    def reached() -> dict | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout_s, f"job {job_id} to be {' or '.join(statuses)}")


def _descendants(pid: int) -> int:
    """How many processes descend from `pid` (its fork servers and their children)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = 0, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += len(children)
        frontier = children
    return found


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_200_waiting_runs_hold_no_process_and_no_thread(server: FlowmillServer) -> None:
    assert server.process is not None
    pid = server.process.pid
    with server.client(server.admin_token()) as client:
        _save(client, "f/waits/sleeper", SLEEPER)
        warm = client.post("/api/v1/jobs/run/p/f/waits/sleeper", json={"seconds": 0}).json()["jobId"]
        _status(client, warm, "SUCCESS")
        time.sleep(1)  # the fork servers' idle children topped up again
        processes, threads = _descendants(pid), _threads(pid)
        ids = [client.post("/api/v1/jobs/run/p/f/waits/sleeper", json={"seconds": 600}).json()["jobId"]
               for _ in range(200)]

        def all_waiting() -> bool:
            return client.get("/api/v1/jobs", params={"status": "WAITING", "limit": 200}).json()["items"].__len__() == 200

        wait_for(all_waiting, 60, "200 runs waiting")
        time.sleep(1)
        # 200 runs wait; the process count moves only by the fork servers' idle children, which
        # they top up in batches (FORK_BATCH), and the threads by the pools' idle threads.
        print(f"\nprocesses {processes} -> {_descendants(pid)}, threads {threads} -> {_threads(pid)} with 200 waiting")
        assert _descendants(pid) <= processes + 4, "a waiting run holds a process"
        assert _threads(pid) <= threads + 4, "a waiting run holds a thread"
        for job_id in ids:
            client.post(f"/api/v1/jobs/{job_id}/cancel")


def test_a_sleeping_run_holds_no_process_and_wakes_on_time(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/waits/sleeper", SLEEPER)
        started = time.time()
        job_id = client.post("/api/v1/jobs/run/p/f/waits/sleeper", json={"seconds": 2}).json()["jobId"]
        job = _status(client, job_id, "WAITING")
        assert job["waitingFor"]["untilMs"] == job["wakeAt"] and job["wakeAt"] >= started * 1000 + 1900
        done = _status(client, job_id, "SUCCESS", timeout_s=15)
        assert done["result"] == 21 and done["finishedAt"] >= job["wakeAt"]
        assert done["finishedAt"] - job["wakeAt"] < 1500  # woken on time, not by a slow poll
        lines = [line["line"] for line in client.get(f"/api/v1/jobs/{job_id}/logs").json()]
        assert lines.count("computing before the sleep") == 1  # replayed, not run again


def test_an_approval_wakes_the_run_with_its_payload_once(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/waits/approval", APPROVAL)
        job_id = client.post("/api/v1/jobs/run/p/f/waits/approval", json={}).json()["jobId"]
        job = _status(client, job_id, "WAITING")
        assert job["waitingFor"] == {"approval": "manager"}
        urls = client.get(f"/api/w/main/jobs/resume_urls/{job_id}/manager").json()
    page = httpx.get(urls["approvalPage"]).json()
    assert page["waiting"] is True and page["status"] == "WAITING"
    forged = httpx.post(urls["resume"][:-4] + "AAAA", json={"note": "forged"})
    assert forged.status_code == 403
    answered = httpx.post(urls["resume"], json={"note": "ship it"})
    assert answered.status_code == 200, answered.text
    assert httpx.post(urls["resume"], json={}).status_code == 409  # answered once
    with server.client(server.admin_token()) as client:
        done = _status(client, job_id, "SUCCESS")
        assert done["result"] == {"approved": True, "payload": {"note": "ship it"}}


def test_a_refused_approval_cancels_the_run(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/waits/approval", APPROVAL)
        job_id = client.post("/api/v1/jobs/run/p/f/waits/approval", json={}).json()["jobId"]
        _status(client, job_id, "WAITING")
        urls = client.get(f"/api/w/main/jobs/resume_urls/{job_id}/manager", params={"approver": "bob"}).json()
        assert httpx.get(urls["cancel"]).status_code == 200
        job = _status(client, job_id, "CANCELLED")
        assert "refused by bob" in job["error"]["message"]


def test_events_are_buffered_and_taken_in_order(server: FlowmillServer) -> None:
    with server.client(server.admin_token()) as client:
        _save(client, "f/waits/events", EVENTS)
        job_id = client.post("/api/v1/jobs/run/p/f/waits/events", json={}).json()["jobId"]
        sent = client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "paid", "payload": 1})  # maybe before it waits
        assert sent.status_code == 201 and sent.json() == {"type": "paid", "number": 1}
        job = _status(client, job_id, "WAITING")
        assert job["waitingFor"] == {"event": "paid"}
        assert client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "bad type!"}).status_code == 400
        assert client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "paid", "payload": 2}).json()["number"] == 2
        assert _status(client, job_id, "SUCCESS")["result"] == [1, 2]
        late = client.post(f"/api/v1/jobs/{job_id}/events", json={"type": "paid", "payload": 3})
        assert late.status_code == 409  # a final run waits for nothing


def test_resume_cancel_and_a_restart_reach_a_waiting_run(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    token = server.admin_token()
    with server.client(token) as client:
        _save(client, "f/waits/sleeper", SLEEPER)
        doomed = client.post("/api/v1/jobs/run/p/f/waits/sleeper", json={"seconds": 60}).json()["jobId"]
        sleeper = client.post("/api/v1/jobs/run/p/f/waits/sleeper", json={"seconds": 4}).json()["jobId"]
        _status(client, doomed, "WAITING")
        wake_at = _status(client, sleeper, "WAITING")["wakeAt"]
        # A resume before its time: its turn runs, sees the time has not come, and waits again.
        assert client.post(f"/api/v1/jobs/{doomed}/resume").status_code == 200
        again = _status(client, doomed, "WAITING")
        assert again["attempt"] == 1 and again["wakeAt"] > time.time() * 1000 + 50_000
        cancelled = client.post(f"/api/v1/jobs/{doomed}/cancel").json()
        assert cancelled["status"] == "CANCELLED"  # at once: nothing carries a waiting run
        assert client.post(f"/api/v1/jobs/{doomed}/resume").status_code == 409
    assert server.stop() == 0  # restarted in the middle of the other's sleep
    server.start()
    with server.client(token) as client:
        job = _status(client, sleeper, "SUCCESS", timeout_s=20)
        assert job["finishedAt"] >= wake_at and job["result"] == 21
