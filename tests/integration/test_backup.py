"""`flowmill backup`: a whole, consistent copy beside a server under write load, and its refusals."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support import ROOT, FlowmillServer

SCRIPT = {"path": "f/backup/hello", "content": "def main(n: int = 1):\n    print('hello', n)\n    return n\n"}
FILLER = ("INSERT INTO kv_entry (workspace_id, namespace, key, value, updated_by, created_at, updated_at) "
          "VALUES ('main', 'filler', $1, $2, 'test', 0, 0)")


def flowmill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_a_backup_under_write_load_is_whole_and_consistent(fresh_server: FlowmillServer, backend: str, tmp_path: Path) -> None:
    server = fresh_server
    server.start()
    token = server.admin_token()
    if backend == "postgres":
        # Nothing to copy here: the command says how with pg_dump, for this database, password left out.
        url = server.database_url.replace("postgres@", "postgres:not-to-be-shown@")
        done = flowmill({**server.env, "FLOWMILL_DATABASE_URL": url}, "backup", str(tmp_path / "x.dump"))
        assert done.returncode == 2, done.stderr
        assert "pg_dump --format=custom" in done.stdout and f"--schema={server.schema}" in done.stdout
        assert "postgresql://postgres@127.0.0.1:5432/test" in done.stdout
        assert "not-to-be-shown" not in done.stdout + done.stderr
        assert not (tmp_path / "x.dump").exists()
        return
    # Some 20 MiB, so that the copy takes many steps while the server commits between them.
    server.write_rows((FILLER, [(f"f{i}", "x" * 1000) for i in range(20_000)]))
    with server.client(token) as client:
        assert client.post("/api/v1/scripts", json=SCRIPT).status_code == 201
    stop = threading.Event()
    acknowledged: list[tuple[float, str]] = []

    def write() -> None:
        with server.client(token) as client:
            n = 0
            while not stop.is_set():
                n += 1
                key = f"{threading.get_ident()}-{n}"
                if client.put(f"/api/v1/kv/load/{key}", json={"n": n, "pad": "y" * 200}).status_code == 200:
                    acknowledged.append((time.monotonic(), key))
                if n % 10 == 0:
                    client.post("/api/v1/jobs/run/p/f/backup/hello", json={"n": n})

    writers = [threading.Thread(target=write) for _ in range(4)]
    for thread in writers:
        thread.start()
    try:
        time.sleep(1)
        before = len(acknowledged)
        began = time.monotonic()
        done = flowmill(server.env, "backup", str(tmp_path / "copy.db"))
        ended = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    assert done.returncode == 0, done.stderr
    assert "backed up" in done.stderr and "master key" in done.stderr
    during = [key for at, key in acknowledged if began < at < ended]
    assert during, "the server took no writes while the copy was made"
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no WAL beside it
    copied = {row[0] for row in copy.execute("SELECT key FROM kv_entry WHERE namespace = 'load'")}
    assert {key for _, key in acknowledged[:before]} <= copied  # everything answered before it began
    assert copy.execute("SELECT count(*) FROM kv_entry WHERE namespace = 'filler'").fetchone()[0] == 20_000
    assert copy.execute("SELECT count(*) FROM job").fetchone()[0] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["copy.db"]  # no partial file left
    assert os.stat(tmp_path / "copy.db").st_mode & 0o077 == 0  # readable by its owner only
    assert server.client().get("/readyz").status_code == 200


def test_a_backup_is_refused_where_it_would_overwrite_or_cannot_be_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    env.update(FLOWMILL_HOME=str(home), PYTHONPATH=str(ROOT))
    assert flowmill(env, "migrate").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "existing.db"
    existing.write_text("keep me")

    refused = flowmill(env, "backup", str(existing))
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "exists; pass --force" in refused.stderr
    assert existing.read_text() == "keep me"
    for target, reason in ((out, "is a directory"), (tmp_path / "missing" / "x.db", "does not exist"),
                           (home / "flowmill.db", "is the database itself")):
        refused = flowmill(env, "backup", str(target))
        assert refused.returncode == 1 and reason in refused.stderr, (target, refused.stderr)
    assert flowmill(env, "backup", str(home / "flowmill.db"), "--force").returncode == 1  # not even forced
    assert sorted(p.name for p in out.iterdir()) == ["existing.db"]  # no partial file left behind

    forced = flowmill(env, "backup", str(existing), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sqlite3.connect(existing).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["existing.db"]

    nothing = {**env, "FLOWMILL_HOME": str(tmp_path / "empty")}
    refused = flowmill(nothing, "backup", str(out / "new.db"))
    assert refused.returncode == 1 and "no database at" in refused.stderr
