"""`flowmill doctor`: what the data dir and the database hold, and whether their server is up.

It only reads: a SQLite file is opened read-only beside a running server (WAL readers never
wait for its writer), PostgreSQL with one connection; nothing is migrated, locked or written.
Whether the server is up is asked twice: is the data dir's lock held (`app.server.owner`, on
SQLite), and does the configured address answer `/readyz`.

Healthy (exit status 0) when the database can be read and, if a server holds the data dir or
answers, it is ready. A server that is simply not running is no problem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from app.config import Settings
from app.engine import retention
from app.server.owner import owner_pid
from app.store.base import Statement
from app.store.postgres import split_schema
from app.store.sqlite import translate

PROBE_TIMEOUT_S = 3.0


@dataclasses.dataclass
class Report:
    data_dir: str
    database: str  # the URL, without a password
    backend: str
    database_bytes: int | None = None  # SQLite: the file; PostgreSQL: the tables and indexes of the schema
    wal_bytes: int | None = None  # SQLite only
    free_pages: int | None = None  # SQLite: pages free inside the file, not yet given back
    auto_vacuum: str | None = None  # SQLite: none, full or incremental
    runs: dict[str, int] = dataclasses.field(default_factory=dict)  # by status
    runs_total: int | None = None
    log_lines: int | None = None
    audit_entries: int | None = None
    oldest_run_at: int | None = None  # epoch ms of the oldest run's creation
    oldest_finished_at: int | None = None
    retention: dict[str, int] = dataclasses.field(default_factory=dict)
    server: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "healthy": self.healthy}


def examine(settings: Settings) -> Report:
    """Read everything the report says; problems are listed in it, not raised."""
    report = Report(str(settings.home), _without_password(settings.database_url),
                    "sqlite" if settings.is_sqlite else "postgresql")
    report.retention = {
        "run_days": settings.retention_days, "runs_per_script": settings.retention_runs_per_script,
        "audit_days": settings.audit_retention_days, "interval_s": settings.retention_interval_s,
    }
    try:
        if settings.is_sqlite:
            _sqlite(settings.sqlite_path, report)
        else:
            asyncio.run(_postgres(settings.database_url, report))
    except Exception as error:  # noqa: BLE001 - whatever it is, it is the report's first problem
        report.problems.append(f"cannot read the database: {type(error).__name__}: {error}")
    _server(settings, report)
    return report


def _counts(fetch: Any, report: Report) -> None:
    def one(statement: Statement) -> Any:
        rows = fetch(statement)
        return rows[0][0] if rows else None

    report.runs = {row[0]: int(row[1]) for row in fetch(retention.RUNS_BY_STATUS)}
    report.runs_total = sum(report.runs.values())
    report.log_lines = int(one(retention.LOG_LINES) or 0)
    report.audit_entries = int(one(retention.AUDIT_ENTRIES) or 0)
    report.oldest_run_at = one(retention.OLDEST_RUN)
    report.oldest_finished_at = one(retention.OLDEST_FINISHED)


def _sqlite(path: Path, report: Report) -> None:
    if not path.is_file():
        report.problems.append(f"no database at {path} (flowmill serve makes it)")
        return
    report.database_bytes = path.stat().st_size
    wal = Path(f"{path}-wal")
    report.wal_bytes = wal.stat().st_size if wal.exists() else 0
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10)
    try:
        report.free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        report.auto_vacuum = {0: "none", 1: "full", 2: "incremental"}.get(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        _counts(lambda s: conn.execute(translate(s.sql), s.args).fetchall(), report)
    finally:
        conn.close()


async def _postgres(url: str, report: Report) -> None:
    import asyncpg

    dsn, schema = split_schema(url)
    conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT_S, server_settings={"search_path": schema or "public"})
    try:
        report.database_bytes = int(await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ))
        results: dict[str, list[Any]] = {}
        for statement in (retention.RUNS_BY_STATUS, retention.LOG_LINES, retention.AUDIT_ENTRIES,
                          retention.OLDEST_RUN, retention.OLDEST_FINISHED):
            results[statement.sql] = [tuple(row) for row in await conn.fetch(statement.sql, *statement.args)]
        _counts(lambda s: results[s.sql], report)
    finally:
        await conn.close()


def _server(settings: Settings, report: Report) -> None:
    import httpx

    pid = owner_pid(settings.home) if settings.is_sqlite else None
    url = f"{settings.internal_url}/readyz"
    server: dict[str, Any] = {"lock_held": None if not settings.is_sqlite else pid is not None,
                              "pid": pid if pid and pid > 0 else None, "url": url, "ready": False, "answer": None}
    try:
        answer = httpx.get(url, timeout=PROBE_TIMEOUT_S)
        server["answer"] = f"{answer.status_code} {answer.text[:200]}".strip()
        server["ready"] = answer.status_code == 200
        if not server["ready"]:
            report.problems.append(f"the server at {url} is not ready: {server['answer']}")
    except httpx.HTTPError as error:
        server["answer"] = f"no answer ({type(error).__name__})"
        if pid is not None:
            report.problems.append(f"a Flowmill process (pid {pid}) holds {settings.home} but {url} does not answer")
    report.server = server


def _without_password(url: str) -> str:
    if url.startswith("sqlite:"):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _when(ms: int | None, now: datetime.datetime) -> str:
    if ms is None:
        return "none"
    at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    days = (now - at).total_seconds() / 86400
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({days:.1f} days ago)"


def _rule(n: int, on: str, off: str) -> str:
    return off if n == 0 else on.format(n=n)


def render(report: Report) -> str:
    """The report as plain text, one fact a line."""
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"data dir       {report.data_dir}", f"database       {report.database}"]
    if report.backend == "sqlite":
        lines.append(f"  file         {_size(report.database_bytes)} (free pages {report.free_pages if report.free_pages is not None else '-'}"
                     f", auto_vacuum {report.auto_vacuum or '-'})")
        lines.append(f"  WAL          {_size(report.wal_bytes)}")
    else:
        lines.append(f"  size         {_size(report.database_bytes)} (tables and indexes of the schema; "
                     "the WAL is PostgreSQL's own)")
    by_status = ", ".join(f"{status} {n:,}" for status, n in sorted(report.runs.items()))
    if report.runs_total is None:
        lines.append("runs           -")
    else:
        lines.append(f"runs           {report.runs_total:,}" + (f" ({by_status})" if by_status else ""))
    lines.append(f"log lines      {report.log_lines:,}" if report.log_lines is not None else "log lines      -")
    lines.append(f"audit entries  {report.audit_entries:,}" if report.audit_entries is not None else "audit entries  -")
    lines.append(f"oldest run     {_when(report.oldest_run_at, now)}")
    lines.append(f"oldest finish  {_when(report.oldest_finished_at, now)}")
    r = report.retention
    lines.append(f"retention      runs: {_rule(r['run_days'], '{n:,} days after they finish', 'kept at any age')}, "
                 f"{_rule(r['runs_per_script'], 'the newest {n:,} per script', 'no count limit')}; "
                 f"audit entries: {_rule(r['audit_days'], '{n:,} days', 'kept at any age')}; "
                 f"a pass every {r['interval_s']} s")
    s = report.server
    if s.get("lock_held"):
        holder = f"pid {s['pid']}" if s.get("pid") else "a process"
        lock = f"{holder} holds the data dir"
    elif s.get("lock_held") is None:
        lock = "no lock on PostgreSQL"
    else:
        lock = "nobody holds the data dir"
    answered = not str(s.get("answer")).startswith("no answer")
    state = "up" if s.get("ready") else "NOT READY" if answered else "NOT ANSWERING" if s.get("lock_held") else "not running"
    lines.append(f"server         {state}: {lock}; {s.get('url')}: {s.get('answer')}")
    lines += [f"PROBLEM        {problem}" for problem in report.problems]
    lines.append("healthy" if report.healthy else "not healthy")
    return "\n".join(lines)
