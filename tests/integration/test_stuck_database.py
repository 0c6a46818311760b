"""A database that cannot take writes, for real: /readyz says so, requests fail in the
envelope instead of hanging, the server recovers when the database does, and SIGTERM still
stops it within its deadline (exit code 1 when the stop had to be forced)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import PG_URL, FlowmillServer, wait_for


@contextlib.contextmanager
def database_locked(server: FlowmillServer) -> Iterator[None]:
    """SQLite: an exclusive transaction on the file from another connection (the server's
    writer waits on it, then fails). PostgreSQL: an exclusive lock on `api_token`, so that
    writes of tokens wait inside the server's pool connections."""
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.home / "flowmill.db", isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import asyncpg

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(PG_URL, server_settings={"search_path": server.schema or "public"}))
    transaction = conn.transaction()
    loop.run_until_complete(transaction.start())
    loop.run_until_complete(conn.execute("LOCK TABLE api_token IN ACCESS EXCLUSIVE MODE"))
    try:
        yield
    finally:
        loop.run_until_complete(transaction.rollback())
        loop.run_until_complete(conn.close())
        loop.close()


def create_tokens(server: FlowmillServer, token: str, count: int) -> list[concurrent.futures.Future[httpx.Response]]:
    """`count` token creations in flight at once (they wait on the lock)."""
    pool = concurrent.futures.ThreadPoolExecutor(count)

    def create(i: int) -> httpx.Response:
        with server.client(token) as client:
            return client.post("/api/v1/tokens", json={"label": f"blocked {i}"}, timeout=60)

    futures = [pool.submit(create, i) for i in range(count)]
    pool.shutdown(wait=False)
    return futures


def readyz(server: FlowmillServer) -> int:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_a_locked_database_fails_readiness_then_recovers(backend: str) -> None:
    server = FlowmillServer(backend)
    try:
        server.start()
        token = server.admin_token()
        with database_locked(server):
            blocked = create_tokens(server, token, 12)  # more than PostgreSQL's pool holds
            wait_for(lambda: readyz(server) == 503, 20, "/readyz answering 503")
            answer = httpx.get(f"{server.url}/readyz", timeout=10)
            assert answer.json()["error"]["code"] == "unavailable", answer.text
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # the process itself answers
            if backend == "sqlite":  # the writer gives up on the lock after busy_timeout: a 503, not a hang
                failed = blocked[0].result(timeout=30)
                assert failed.status_code == 503 and failed.json()["error"]["code"] == "unavailable", failed.text
        wait_for(lambda: readyz(server) == 200, 20, "/readyz answering 200 again")
        for future in blocked:  # on PostgreSQL the waiting writes commit once the lock goes
            assert future.result(timeout=30).status_code in (201, 503)
        with server.client(token) as client:
            assert client.post("/api/v1/tokens", json={"label": "after"}).status_code == 201
        assert server.stop() == 0
    finally:
        server.close()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_server_stuck_on_its_database_still_stops_on_a_signal(backend: str, signal_name: str) -> None:
    import signal

    server = FlowmillServer(backend, env={"FLOWMILL_SHUTDOWN_TIMEOUT_S": "3"})
    try:
        server.start()
        token = server.admin_token()
        with database_locked(server):
            create_tokens(server, token, 12)
            wait_for(lambda: readyz(server) == 503, 20, "/readyz answering 503")
            create_tokens(server, token, 4)  # writes in flight as the signal comes
            time.sleep(0.5)
            assert server.process is not None
            started = time.monotonic()
            server.process.send_signal(getattr(signal, signal_name))
            code = server.process.wait(15)
            took = time.monotonic() - started
        assert took < 8, took
        assert code != 0, server.output()[-2000:]  # the stop was forced: said by the exit code and the log
        assert "stopped by force" in server.output()
        # The database is whole: the server starts on it again and writes.
        server.start()
        with server.client(server.login("admin")) as client:
            assert client.post("/api/v1/tokens", json={"label": "after a forced stop"}).status_code == 201
        assert server.stop() == 0
    finally:
        server.close()
