"""A real Flowmill server in a subprocess, on SQLite or on PostgreSQL, for the tests."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PASSWORD = "password-1234"
T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout_s: float = 5, what: str = "the condition") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(backend: str, home: Path) -> tuple[str, str | None]:
    """(the URL, the PostgreSQL schema to drop afterwards or None)."""
    if backend == "sqlite":
        return f"sqlite:///{home / 'flowmill.db'}", None
    schema = f"t_{secrets.token_hex(6)}"
    return f"{PG_URL}?schema={schema}", schema


def drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


class FlowmillServer:
    """`python -m app serve` on a free port, with its own data dir and database."""

    def __init__(self, backend: str, env: dict[str, str] | None = None) -> None:
        self.backend = backend
        self._tmp = tempfile.TemporaryDirectory(prefix="flowmill-test-")
        self.home = Path(self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url, self.schema = database_url(backend, self.home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
        self.env.update(
            FLOWMILL_HOME=str(self.home), FLOWMILL_PORT=str(self.port), FLOWMILL_DATABASE_URL=self.database_url,
            PYTHONPATH=str(ROOT),
        )
        self.env.update(env or {})
        self.log = self.home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 20) -> float:
        """Start and wait for /readyz; seconds it took."""
        started = time.perf_counter()
        self.process = self.spawn()
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.kill9()
        raise RuntimeError(f"the server was not ready in {timeout_s} s: {self.output()[-3000:]}")

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """The server process (not waited for); `args` replace `serve`."""
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "app", *(args or ("serve",))], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill9()
        if self.schema:
            drop_schema(self.schema)
        self._tmp.cleanup()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- the database, read beside the server -------------------------------------------------------

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of `sql` (PostgreSQL's `$1` parameters) read straight from the server's database."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(f"file:{self.home / 'flowmill.db'}?mode=ro", uri=True, timeout=10)
            try:
                return [tuple(row) for row in conn.execute(re.sub(r"\$(\d+)", r"?\1", sql), args).fetchall()]
            finally:
                conn.close()
        import asyncpg

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(PG_URL, server_settings={"search_path": self.schema or "public"})
            try:
                return [tuple(row) for row in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def write_rows(self, *batches: tuple[str, list[tuple[Any, ...]]]) -> None:
        """Write straight into the server's database, in one transaction: each (sql, rows) is
        `sql` (PostgreSQL's `$1` parameters) run once per row (rows made long ago, say)."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.home / "flowmill.db", timeout=10)
            try:
                with conn:
                    for sql, rows in batches:
                        conn.executemany(re.sub(r"\$(\d+)", r"?\1", sql), rows)
            finally:
                conn.close()
            return
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(PG_URL, server_settings={"search_path": self.schema or "public"})
            try:
                async with conn.transaction():
                    for sql, rows in batches:
                        await conn.executemany(sql, rows)
            finally:
                await conn.close()

        asyncio.run(run())

    def count(self, table: str, where: str = "1 = 1", *args: Any) -> int:
        return int(self.query(f"SELECT count(*) FROM {table} WHERE {where}", *args)[0][0])

    def dump(self) -> str:
        """Every row of every table, as text (bytes shown both raw and as hex)."""
        if self.backend == "sqlite":
            tables = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
        else:
            tables = [r[0] for r in self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", self.schema)]
        parts = []
        for table in tables:
            for row in self.query(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        raw = bytes(value)
                        parts += [raw.decode("latin-1"), raw.hex()]
                    else:
                        parts.append(str(value))
        return "\n".join(parts)

    # -- calls ------------------------------------------------------------------------------------

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def register(self, username: str, password: str = PASSWORD, role: str | None = None, token: str | None = None) -> httpx.Response:
        body = {"username": username, "password": password, **({"role": role} if role else {})}
        with self.client(token) as client:
            return client.post("/auth/register", json=body)

    def login(self, username: str, password: str = PASSWORD) -> str:
        with self.client() as client:
            response = client.post("/auth/login", json={"username": username, "password": password})
        response.raise_for_status()
        return response.json()["token"]

    def admin_token(self) -> str:
        """The first user's token (registering it if needed)."""
        if not getattr(self, "_admin", None):
            response = self.register("admin")
            assert response.status_code in (201, 401), response.text
            self._admin = self.login("admin")
        return self._admin

    def user(self, username: str, role: str, workspace: str = "main") -> str:
        """A user with `role` in `workspace` (made by the admin); its token."""
        admin = self.admin_token()
        response = self.register(username, role=role if workspace == "main" else "viewer", token=admin)
        assert response.status_code == 201, response.text
        if workspace != "main":
            with self.client(admin) as client:
                client.delete(f"/api/v1/workspaces/main/members/{username}").raise_for_status()
                client.put(f"/api/v1/workspaces/{workspace}/members/{username}", json={"role": role}).raise_for_status()
        return self.login(username)
