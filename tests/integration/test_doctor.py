"""`flowmill doctor`: what it says with the server up, down, and when something is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.server.owner import DataDirLock, LOCK_NAME
from tests.support import ROOT, FlowmillServer

SCRIPT = {"path": "f/doc/hello", "content": "def main(n: int = 1):\n    print('hello', n)\n    return n\n"}


def flowmill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_doctor_with_the_server_up_then_down(fresh_server: FlowmillServer, backend: str) -> None:
    server = fresh_server
    server.start()
    token = server.admin_token()
    with server.client(token) as client:
        assert client.post("/api/v1/scripts", json=SCRIPT).status_code == 201
        for n in range(3):
            assert client.post("/api/v1/jobs/run_wait_result/p/f/doc/hello", json={"n": n}).status_code == 200

    up = flowmill(server.env, "doctor")
    assert up.returncode == 0, up.stdout + up.stderr
    text = up.stdout
    assert f"data dir       {server.home}" in text
    assert "runs           3 (SUCCESS 3)" in text
    assert "log lines      3" in text
    assert "oldest run     20" in text and "days ago" in text
    assert "retention      runs: 30 days after they finish, the newest 1,000 per script; audit entries: 365 days" in text
    assert "server         up" in text and text.rstrip().endswith("healthy")
    if backend == "sqlite":
        assert f"pid {server.process.pid} holds the data dir" in text
        assert "  WAL " in text and "auto_vacuum incremental" in text

    report = json.loads(flowmill(server.env, "doctor", "--json").stdout)
    assert report["healthy"] is True and report["server"]["ready"] is True
    assert report["runs"] == {"SUCCESS": 3} and report["log_lines"] == 3 and report["audit_entries"] >= 1
    assert report["database_bytes"] > 0
    assert report["server"]["lock_held"] is (True if backend == "sqlite" else None)
    if backend == "sqlite":
        assert report["server"]["pid"] == server.process.pid and report["wal_bytes"] is not None

    assert server.stop() == 0
    down = flowmill(server.env, "doctor", "--json")
    assert down.returncode == 0, down.stdout + down.stderr  # a stopped server is no problem
    report = json.loads(down.stdout)
    assert report["server"]["ready"] is False and report["healthy"] is True
    assert report["server"]["lock_held"] is (False if backend == "sqlite" else None)
    assert report["runs"] == {"SUCCESS": 3}
    assert "server         not running" in flowmill(server.env, "doctor").stdout


def test_doctor_says_what_is_wrong(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    env.update(FLOWMILL_HOME=str(tmp_path), PYTHONPATH=str(ROOT), FLOWMILL_PORT="1")
    missing = flowmill(env, "doctor")
    assert missing.returncode == 1 and "no database at" in missing.stdout and "not healthy" in missing.stdout
    assert flowmill(env, "migrate").returncode == 0
    lock = DataDirLock()
    lock.hold(tmp_path / LOCK_NAME, str(tmp_path))  # a process holds the data dir, but nothing answers
    try:
        stuck = flowmill(env, "doctor")
    finally:
        lock.release()
    assert stuck.returncode == 1, stuck.stdout
    assert f"(pid {os.getpid()}) holds {tmp_path} but" in stuck.stdout and "NOT ANSWERING" in stuck.stdout
