"""One server per SQLite data dir: a second `flowmill serve` is refused in one line and the first
keeps serving and running; on PostgreSQL, processes sharing a home keep their sockets apart."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import backends
from tests.support import ROOT, FlowmillServer, free_port

SCRIPT = {"path": "f/ops/echo", "content": "def main(n: int = 1):\n    return {'n': n}\n"}


def _run(server: FlowmillServer, token: str, n: int) -> None:
    with server.client(token) as client:
        answer = client.post("/api/v1/jobs/run_wait_result/p/f/ops/echo", json={"n": n})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"n": n}


def _second(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *(command or ("serve",))], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )


def _files(home: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mode, mtime) of what the data dir holds that a second server could touch."""
    found = {}
    for path in [home / "server.lock", home / "master.key", home / "jwt.key", *(home / "run").iterdir()]:
        st = os.lstat(path)
        found[str(path)] = (st.st_ino, st.st_mode, st.st_mtime_ns)
    return found


def test_a_second_server_on_the_same_home_is_refused() -> None:
    first = FlowmillServer("sqlite")
    try:
        first.start()
        token = first.admin_token()
        with first.client(token) as client:
            assert client.post("/api/v1/scripts", json=SCRIPT).status_code in (200, 201)
        _run(first, token, 1)
        before = _files(first.home)
        lock_text = (first.home / "server.lock").read_text()
        migrations = first.count("migration")

        env = {**first.env, "FLOWMILL_PORT": str(free_port())}
        done = _second(env)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("flowmill: another Flowmill process") and f"(pid {first.process.pid})" in lines[0]
        assert str(first.home) in lines[0]
        # the same port as well: the data dir is named, not the port
        same_port = _second(first.env)
        assert same_port.returncode == 1 and "another Flowmill process" in same_port.stderr

        assert _files(first.home) == before  # its sockets, keys and lock untouched
        assert (first.home / "server.lock").read_text() == lock_text == f"{first.process.pid}\n"
        assert first.count("migration") == migrations
        _run(first, token, 2)
        assert first.process.poll() is None
    finally:
        first.close()


def test_migrate_is_refused_while_the_server_runs_and_allowed_after() -> None:
    server = FlowmillServer("sqlite")
    try:
        server.start()
        done = _second(server.env, "migrate")
        assert done.returncode == 1 and "another Flowmill process" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert server.stop() == 0
        again = _second(server.env, "migrate")
        assert again.returncode == 0, again.stderr
    finally:
        server.close()


def test_a_sqlite_file_outside_the_home_is_held_too() -> None:
    """Two homes, one SQLite file: the second server is refused, naming the file."""
    with tempfile.TemporaryDirectory(prefix="flowmill-db-") as elsewhere:
        url = f"sqlite:///{Path(elsewhere) / 'shared.db'}"
        first = FlowmillServer("sqlite", env={"FLOWMILL_DATABASE_URL": url})
        second = FlowmillServer("sqlite", env={"FLOWMILL_DATABASE_URL": url})
        try:
            first.start()
            done = _second(second.env)
            assert done.returncode == 1, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
            assert "shared.db" in done.stderr and "another Flowmill process" in done.stderr
            assert first.client().get("/readyz").status_code == 200
        finally:
            first.close()
            second.close()


@pytest.mark.skipif("postgres" not in backends(), reason="PostgreSQL is not among FLOWMILL_TEST_BACKENDS")
def test_postgresql_processes_sharing_a_home_keep_their_sockets_apart(postgres: None) -> None:
    first = FlowmillServer("postgres")
    second = FlowmillServer("postgres", env={"FLOWMILL_HOME": str(first.home),
                                             "FLOWMILL_DATABASE_URL": first.database_url})
    second.log = first.home / "second.log"
    try:
        first.start()
        token = first.admin_token()
        with first.client(token) as client:
            assert client.post("/api/v1/scripts", json=SCRIPT).status_code in (200, 201)
        _run(first, token, 1)
        second.start()
        _run(second, token, 2)
        _run(first, token, 3)
        runs = sorted(p.name for p in (first.home / "run").iterdir())
        assert runs == sorted([str(first.process.pid), str(second.process.pid)])
        assert second.stop() == 0
        _run(first, token, 4)
    finally:
        second.kill9()
        second.schema = None  # the first one's, dropped once
        second.close()
        first.close()
