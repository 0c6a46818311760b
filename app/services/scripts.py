"""Scripts: Python files with a `main`, saved by path, each save an immutable version.

A version is named by the hash of what defines it (path, content and settings); the path
points at the latest. Saving parses the source without running it, infers the JSON Schema
of `main`'s arguments and notes whether a `preprocessor` is defined, and whether `main` is a
workflow (`@workflow`, Flowmill's or wmill's): its runs are then of kind `workflow`, and it is
registered under its workflow name (`@workflow(name="x")`, or the path with `/` as `.`),
kept in the version's settings (`ScriptSettings.workflow`).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import msgspec

from app.engine.queue import Policy
from app.errors import BadRequest, Conflict, Invalid, NotFound
from app.runtimes.python.schema import ScriptSyntaxError, inspect_script
from app.services import audit
from app.services.actor import Actor, now_ms
from app.store.base import Database, Row, Statement

PATH = re.compile(r"^(u|f)/[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_.-]{1,100}){1,8}$")
WORKFLOW_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_CONTENT_BYTES = 1024 * 1024


class Retry(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    attempts: int = 0
    backoff_s: float = 1.0


class ScriptSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """What a run of the script obeys; enforced by the executor."""

    timeout: float | None = None  # seconds
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    concurrency_time_window_s: float | None = None
    cache_ttl: float | None = None  # seconds a successful result is reused for the same args
    priority: int = 0
    retry: Retry | None = None
    # Set when saved, from the source: the workflow name when `main` is a workflow, else None.
    workflow: str | None = None

    def check(self) -> ScriptSettings:
        if self.timeout is not None and not 0 < self.timeout <= 7 * 86400:
            raise BadRequest("timeout must be between 0 and 604800 seconds")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise BadRequest("concurrencyLimit must be at least 1")
        if self.concurrency_time_window_s is not None and self.concurrency_time_window_s <= 0:
            raise BadRequest("concurrencyTimeWindowS must be positive")
        if self.cache_ttl is not None and self.cache_ttl < 0:
            raise BadRequest("cacheTtl must not be negative")
        if self.retry is not None and not (0 <= self.retry.attempts <= 100 and 0 <= self.retry.backoff_s <= 86400):
            raise BadRequest("retry.attempts must be 0-100 and retry.backoffS 0-86400")
        return self

    def policy(self, path: str) -> Policy:
        """What a run of the script at `path` is scheduled by, copied onto each run."""
        retry = self.retry
        return Policy(
            timeout_s=self.timeout, max_attempts=1 + (retry.attempts if retry else 0),
            backoff_s=retry.backoff_s if retry else 1.0, priority=self.priority,
            concurrency_key=(self.concurrency_key or path) if self.concurrency_limit else None,
            concurrency_limit=self.concurrency_limit, concurrency_window_s=self.concurrency_time_window_s,
            cache_ttl_s=self.cache_ttl,
        )


def check_path(path: str) -> str:
    if len(path) > 255 or not PATH.match(path) or ".." in path:
        raise BadRequest("a script path is u/<user>/<name> or f/<folder>/<name> (letters, digits, _ - .)")
    return path


def version_hash(workspace: str, path: str, content: str, settings: ScriptSettings) -> str:
    digest = hashlib.sha256()
    for part in (workspace, path, content, msgspec.json.encode(settings).decode()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


_VERSION_COLUMNS = (
    "v.hash, v.workspace_id, v.path, v.parent_hash, v.content, v.summary, v.description, v.schema, "
    "v.settings, v.lock, v.has_preprocessor, v.created_by, v.created_at"
)


def _version(row: Row) -> dict[str, Any]:
    version = {
        "hash": row["hash"], "workspace": row["workspace_id"], "path": row["path"], "parent_hash": row["parent_hash"],
        "content": row["content"], "summary": row["summary"], "description": row["description"],
        "schema": msgspec.json.decode(row["schema"]), "settings": msgspec.json.decode(row["settings"], type=ScriptSettings),
        "lock": row["lock"], "has_preprocessor": bool(row["has_preprocessor"]),
        "created_by": row["created_by"], "created_at": row["created_at"],
    }
    version["workflow"] = version["settings"].workflow
    return version


def workflow_name(path: str, given: str | None) -> str:
    """A workflow's name: the one `@workflow(name=...)` gives, else the path with `/` as `.`."""
    name = given if given is not None else path.replace("/", ".")
    if not WORKFLOW_NAME.fullmatch(name):
        raise BadRequest("a workflow's name is 1-200 letters, digits and _ . -")
    return name


class Scripts:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The version each path points at, for starting runs without a read each time. One
        # process owns a SQLite database, so its own saves are all there is to see; on
        # PostgreSQL another process may save, so an entry serves for a second at most.
        self._latest: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._max_age = float("inf") if db.dialect == "sqlite" else 1.0

    async def save(
        self, actor: Actor, path: str, content: str, summary: str = "", description: str = "",
        settings: ScriptSettings | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Save a new version (or find the identical one); (version, created now)."""
        check_path(path)
        settings = (settings or ScriptSettings()).check()
        if len(content.encode()) > MAX_CONTENT_BYTES:
            raise BadRequest(f"a script is limited to {MAX_CONTENT_BYTES} bytes")
        try:
            info = inspect_script(content)
        except ScriptSyntaxError as error:
            raise Invalid(
                f"{error.message} (line {error.line}, column {error.column})",
                {"line": error.line, "column": error.column},
            ) from None
        settings = msgspec.structs.replace(
            settings, workflow=workflow_name(path, info.workflow_name) if info.is_workflow else None)
        if settings.workflow is not None:
            await self._check_workflow_name(actor.workspace, settings.workflow, path)
        digest = version_hash(actor.workspace, path, content, settings)
        existing = await self.db.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM script_version v WHERE v.hash = $1 AND v.workspace_id = $2", digest, actor.workspace
        )
        head = await self.db.fetchval("SELECT hash FROM script WHERE workspace_id = $1 AND path = $2", actor.workspace, path)
        now = now_ms()
        statements = []
        if existing is None:
            statements.append(Statement(
                "INSERT INTO script_version (hash, workspace_id, path, parent_hash, content, summary, description, "
                "schema, settings, lock, has_preprocessor, created_by, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '', $10, $11, $12)",
                (digest, actor.workspace, path, head, content, summary, description,
                 msgspec.json.encode(info.schema).decode(), msgspec.json.encode(settings).decode(),
                 int(info.has_preprocessor), actor.username or "", now),
            ))
        if head != digest:
            statements.append(Statement(
                "INSERT INTO script (workspace_id, path, hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) "
                "ON CONFLICT (workspace_id, path) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
                (actor.workspace, path, digest, now),
            ))
        if statements:
            await self.db.write(*statements, audit.entry(actor, f"script:{path}@{digest}"))
            self._latest.pop((actor.workspace, path), None)
        return await self.by_hash(actor.workspace, digest), existing is None

    async def _check_workflow_name(self, workspace: str, name: str, path: str) -> None:
        """Conflict (409) when another script's latest version is the workflow `name`."""
        for other_name, other_path in await self.workflows(workspace):
            if other_name == name and other_path != path:
                raise Conflict(f"the workflow name {name} is taken by the script at {other_path}", {"path": other_path})

    async def workflows(self, workspace: str) -> list[tuple[str, str]]:
        """(name, path) of the workflows of `workspace`: the scripts whose latest version's
        `main` is a workflow, by name."""
        rows = await self.db.fetch(
            "SELECT s.path, v.settings FROM script s JOIN script_version v ON v.hash = s.hash "
            "WHERE s.workspace_id = $1 AND v.settings LIKE $2 ORDER BY s.path",
            workspace, '%"workflow":%',
        )
        found = []
        for row in rows:
            name = msgspec.json.decode(row["settings"], type=ScriptSettings).workflow
            if name is not None:
                found.append((name, row["path"]))
        return sorted(found)

    async def by_workflow(self, workspace: str, name: str) -> dict[str, Any]:
        """The latest version of the script that is the workflow `name`; NotFound otherwise."""
        fragment = msgspec.json.encode({"workflow": name}).decode()[1:-1]
        rows = await self.db.fetch(
            f"SELECT {_VERSION_COLUMNS} FROM script s JOIN script_version v ON v.hash = s.hash "
            "WHERE s.workspace_id = $1 AND v.settings LIKE $2 ORDER BY s.path",
            workspace, f"%{fragment}%",
        )
        for row in rows:
            version = _version(row)
            if version["workflow"] == name:
                return version
        raise NotFound(f"no workflow {name}")

    async def for_run(self, workspace: str, path: str) -> dict[str, Any]:
        """`latest`, from a cache: what starting a run needs (hash, settings, preprocessor)."""
        cached = self._latest.get((workspace, path))
        if cached is not None and time.monotonic() - cached[0] < self._max_age:
            return cached[1]
        if len(self._latest) > 10_000:
            self._latest.clear()
        version = await self.latest(workspace, path)
        self._latest[(workspace, path)] = (time.monotonic(), version)
        return version

    async def latest(self, workspace: str, path: str) -> dict[str, Any]:
        """The version a path points at; 404 if there is none."""
        row = await self.db.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM script s JOIN script_version v ON v.hash = s.hash "
            "WHERE s.workspace_id = $1 AND s.path = $2",
            workspace, path,
        )
        if row is None:
            raise NotFound(f"no script at {path}")
        return _version(row)

    async def by_hash(self, workspace: str, digest: str) -> dict[str, Any]:
        row = await self.db.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM script_version v WHERE v.hash = $1 AND v.workspace_id = $2", digest, workspace
        )
        if row is None:
            raise NotFound(f"no script version {digest}")
        return _version(row)

    async def history(self, workspace: str, path: str) -> list[dict[str, Any]]:
        """Every version saved at a path, newest first (without their content)."""
        rows = await self.db.fetch(
            "SELECT hash, summary, created_by, created_at FROM script_version WHERE workspace_id = $1 AND path = $2 "
            "ORDER BY created_at DESC, hash",
            workspace, path,
        )
        if not rows:
            raise NotFound(f"no script at {path}")
        return [{"hash": r["hash"], "summary": r["summary"], "created_by": r["created_by"], "created_at": r["created_at"]} for r in rows]

    async def list(self, workspace: str, prefix: str = "") -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT s.path, s.hash, s.updated_at, v.summary FROM script s JOIN script_version v ON v.hash = s.hash "
            "WHERE s.workspace_id = $1 AND substr(s.path, 1, $2) = $3 ORDER BY s.path",
            workspace, len(prefix), prefix,
        )
        return [{"path": r["path"], "hash": r["hash"], "summary": r["summary"], "updated_at": r["updated_at"]} for r in rows]

    async def delete(self, actor: Actor, path: str) -> None:
        """Remove a script and its versions; its past runs stay in the history."""
        self._latest.pop((actor.workspace, path), None)
        results = await self.db.write(
            Statement("DELETE FROM script WHERE workspace_id = $1 AND path = $2", (actor.workspace, path)),
            Statement("DELETE FROM script_version WHERE workspace_id = $1 AND path = $2", (actor.workspace, path)),
            audit.entry(actor, f"script:{path}"),
        )
        self._latest.pop((actor.workspace, path), None)  # again: a run may have read it meanwhile
        if results[0].rowcount == 0:
            raise NotFound(f"no script at {path}")

    async def remember_lock(self, digest: str, lock: str) -> None:
        """Keep the pinned requirements found at a version's first run."""
        await self.db.execute("UPDATE script_version SET lock = $1 WHERE hash = $2", lock, digest)
        for _, version in self._latest.values():  # synchronous runs start from these: no install check again
            if version["hash"] == digest:
                version["lock"] = lock
