"""Every test that uses a server or a database runs twice: on SQLite and on PostgreSQL.

`FLOWMILL_TEST_BACKENDS=sqlite` (or `postgres`) narrows the run to one backend.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support import FlowmillServer


def backends() -> list[str]:
    chosen = os.environ.get("FLOWMILL_TEST_BACKENDS", "sqlite,postgres")
    return [b.strip() for b in chosen.split(",") if b.strip()]


def _postgres_answers() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False).returncode == 0


@pytest.fixture(scope="session")
def postgres() -> None:
    """PostgreSQL on 127.0.0.1:5432, started if it is down; a failure, never a skip."""
    if _postgres_answers():
        return
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"], check=False)
        for _ in range(30):
            if _postgres_answers():
                return
            time.sleep(1)
    pytest.fail("PostgreSQL does not answer on 127.0.0.1:5432 and could not be started")


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
