"""`/api/v1/scripts`: save, read, list and delete scripts and their versions."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post

from app.api.bounds import (
    Attempts, BackoffS, CacheTtlS, ConcurrencyLimit, Priority, TimeoutS, WindowS,
)
from app.api.context import context
from app.services.scripts import Retry, ScriptSettings


class RetryIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    attempts: Attempts = 0
    backoff_s: BackoffS = 1.0


class ScriptIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    path: str
    content: str
    summary: str = ""
    description: str = ""
    timeout: TimeoutS | None = None  # seconds
    concurrency_limit: ConcurrencyLimit | None = None
    concurrency_key: str | None = None
    concurrency_time_window_s: WindowS | None = None
    cache_ttl: CacheTtlS | None = None  # seconds
    priority: Priority = 0
    retry: RetryIn | None = None

    def settings(self) -> ScriptSettings:
        retry = None if self.retry is None else Retry(self.retry.attempts, self.retry.backoff_s)
        return ScriptSettings(
            timeout=self.timeout, concurrency_limit=self.concurrency_limit, concurrency_key=self.concurrency_key,
            concurrency_time_window_s=self.concurrency_time_window_s, cache_ttl=self.cache_ttl,
            priority=self.priority, retry=retry,
        )


class ScriptOut(msgspec.Struct, rename="camel"):
    path: str
    hash: str
    parent_hash: str | None
    content: str
    summary: str
    description: str
    schema: dict[str, Any]
    has_preprocessor: bool
    created_by: str
    created_at: int
    lock: str
    timeout: float | None = None
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    concurrency_time_window_s: float | None = None
    cache_ttl: float | None = None
    priority: int = 0
    retry: Retry | None = None
    workflow: str | None = None  # the workflow's name, when `main` is a workflow (its runs are of kind workflow)


class ScriptListItem(msgspec.Struct, rename="camel"):
    path: str
    hash: str
    summary: str
    updated_at: int


class ScriptVersionItem(msgspec.Struct, rename="camel"):
    hash: str
    summary: str
    created_by: str
    created_at: int


def script_out(version: dict[str, Any]) -> ScriptOut:
    settings: ScriptSettings = version["settings"]
    return ScriptOut(
        path=version["path"], hash=version["hash"], parent_hash=version["parent_hash"], content=version["content"],
        summary=version["summary"], description=version["description"], schema=version["schema"],
        has_preprocessor=version["has_preprocessor"], created_by=version["created_by"], created_at=version["created_at"],
        lock=version["lock"], **{f: getattr(settings, f) for f in settings.__struct_fields__},
    )


@post("/scripts", opt={"role": "editor", "audit": "script.save"})
async def save_script(request: Request, data: ScriptIn) -> Response[ScriptOut]:
    """Save a new version (201), or answer the identical existing one (200)."""
    services, actor = context(request)
    version, created = await services.scripts.save(
        actor, data.path, data.content, data.summary, data.description, data.settings()
    )
    return Response(script_out(version), status_code=201 if created else 200)


@get("/scripts", opt={"role": "viewer"})
async def list_scripts(request: Request, prefix: str = "") -> list[ScriptListItem]:
    """The workspace's scripts (latest versions), optionally under a path prefix."""
    services, actor = context(request)
    return [ScriptListItem(**s) for s in await services.scripts.list(actor.workspace, prefix)]


@get("/scripts/p/{path:path}", opt={"role": "viewer"})
async def get_script(request: Request, path: str) -> ScriptOut:
    """The latest version at a path."""
    services, actor = context(request)
    return script_out(await services.scripts.latest(actor.workspace, path.lstrip("/")))


@get("/scripts/h/{digest:str}", opt={"role": "viewer"})
async def get_script_version(request: Request, digest: str) -> ScriptOut:
    """One version, by its hash."""
    services, actor = context(request)
    return script_out(await services.scripts.by_hash(actor.workspace, digest))


@get("/scripts/history/p/{path:path}", opt={"role": "viewer"})
async def script_history(request: Request, path: str) -> list[ScriptVersionItem]:
    """Every version saved at a path, newest first."""
    services, actor = context(request)
    return [ScriptVersionItem(**v) for v in await services.scripts.history(actor.workspace, path.lstrip("/"))]


@delete("/scripts/p/{path:path}", opt={"role": "editor", "audit": "script.delete"})
async def delete_script(request: Request, path: str) -> None:
    """Delete a script and its versions (its runs stay in the history)."""
    services, actor = context(request)
    await services.scripts.delete(actor, path.lstrip("/"))


HANDLERS = [save_script, list_scripts, get_script, get_script_version, script_history, delete_script]
