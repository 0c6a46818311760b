"""Every test that uses a server or a database runs twice: on SQLite and on PostgreSQL.

`FLOWMILL_TEST_BACKENDS=sqlite` (or `postgres`) narrows the run to one backend.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support import PG_URL, FlowmillServer


def backends() -> list[str]:
    chosen = os.environ.get("FLOWMILL_TEST_BACKENDS", "sqlite,postgres")
    return [b.strip() for b in chosen.split(",") if b.strip()]


def _postgres_answers() -> bool:
    """True when the test database takes a connection and a query."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> None:
    """PostgreSQL on 127.0.0.1:5432, started once if it is down; a failure, never a skip."""
    if _postgres_answers():
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
        for _ in range(30):
            if _postgres_answers():
                return
            time.sleep(1)
    pytest.fail(f"PostgreSQL does not answer at {PG_URL} and could not be started (versions found: {versions})")


@pytest.fixture(scope="session", params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
    return request.param


@pytest.fixture(scope="module")
def server(backend: str) -> Iterator[FlowmillServer]:
    """One running server per test module and backend, with an admin registered."""
    instance = FlowmillServer(backend)
    instance.start()
    instance.admin_token()
    yield instance
    instance.close()


@pytest.fixture
def fresh_server(backend: str) -> Iterator[FlowmillServer]:
    """A server of its own, not started: for restart, crash and start-up tests."""
    instance = FlowmillServer(backend)
    yield instance
    instance.close()
