"""Static folders: a zip or tar archive uploaded as a folder, served by static routes.

Files are kept in the database (so every process sharing it serves the same site, and a
backup holds them). An upload replaces the folder as a whole, in one transaction. Paths are
checked when the archive is read and again when a file is asked for: nothing outside the
folder can be named, let alone served.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import posixpath
import tarfile
import zipfile
from typing import Any

from app.errors import BadRequest, Forbidden, NotFound, TooLarge
from app.services.actor import Actor, at_least, now_ms
from app.store.base import Database, Statement

MAX_FILES = 10_000
MAX_UNPACKED = 100 * 1024 * 1024


def safe_path(path: str) -> str | None:
    """`a/b.css` for a path inside a folder; None for one that is not (`..`, absolute, NUL, `\\`)."""
    if not path or "\0" in path or "\\" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(part in ("..", ".") for part in parts):
        return None
    return "/".join(p for p in parts if p)


def folder_name(folder: str) -> str:
    name = safe_path(folder.strip("/"))
    if not name or len(name) > 255:
        raise BadRequest("a static folder is named by a relative path without . or .. segments")
    return name


def _members(archive: bytes) -> list[tuple[str, bytes]]:
    """(path, content) of the regular files of a zip or tar archive; BadRequest for anything unsafe."""
    files: list[tuple[str, bytes]] = []
    total = 0
    try:
        if archive[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
                for info in bundle.infolist():
                    if info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise BadRequest(f"the archive holds a symbolic link ({info.filename}); links are not served")
                    total += info.file_size
                    if total > MAX_UNPACKED:
                        raise TooLarge(f"the archive unpacks to more than {MAX_UNPACKED} bytes")
                    files.append((info.filename, bundle.read(info)))
        else:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as bundle:
                for member in bundle.getmembers():
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BadRequest(f"the archive holds {member.name}, which is not a regular file")
                    total += member.size
                    if total > MAX_UNPACKED:
                        raise TooLarge(f"the archive unpacks to more than {MAX_UNPACKED} bytes")
                    extracted = bundle.extractfile(member)
                    files.append((member.name, extracted.read() if extracted else b""))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise BadRequest(f"the body is not a zip or tar archive: {error}") from None
    if len(files) > MAX_FILES:
        raise BadRequest(f"an archive holds at most {MAX_FILES} files")
    checked = []
    for name, content in files:
        path = safe_path(name.removeprefix("./"))
        if path is None:
            raise BadRequest(f"the archive names a file outside its folder: {name[:200]}")
        checked.append((path, content))
    return checked


class StaticFiles:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upload(self, actor: Actor, folder: str, archive: bytes) -> dict[str, Any]:
        """Replace the folder with the files of `archive` (zip, tar, tar.gz)."""
        if not at_least(actor.role, "editor"):
            raise Forbidden("uploading static files needs the editor role")
        folder = folder_name(folder)
        files = _members(archive)
        if not files:
            raise BadRequest("the archive holds no files")
        now = now_ms()
        statements = [Statement("DELETE FROM static_file WHERE workspace_id = $1 AND folder = $2", (actor.workspace, folder))]
        statements += [
            Statement(
                "INSERT INTO static_file (workspace_id, folder, path, content, etag, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                (actor.workspace, folder, path, content, hashlib.sha256(content).hexdigest()[:32], now),
            )
            for path, content in files
        ]
        await self.db.write(*statements)
        return {"folder": folder, "files": len(files), "bytes": sum(len(c) for _, c in files)}

    async def folders(self, workspace: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT folder, COUNT(*) AS files, MAX(updated_at) AS updated_at FROM static_file WHERE workspace_id = $1 "
            "GROUP BY folder ORDER BY folder",
            workspace,
        )
        return [{"folder": r["folder"], "files": r["files"], "updatedAt": r["updated_at"]} for r in rows]

    async def files(self, workspace: str, folder: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT path, etag, LENGTH(content) AS size FROM static_file WHERE workspace_id = $1 AND folder = $2 ORDER BY path",
            workspace, folder_name(folder),
        )
        if not rows:
            raise NotFound(f"no static folder {folder}")
        return [{"path": r["path"], "etag": r["etag"], "size": r["size"]} for r in rows]

    async def delete(self, actor: Actor, folder: str) -> None:
        if not at_least(actor.role, "editor"):
            raise Forbidden("deleting static files needs the editor role")
        results = await self.db.write(Statement(
            "DELETE FROM static_file WHERE workspace_id = $1 AND folder = $2", (actor.workspace, folder_name(folder))
        ))
        if not results[0].rowcount:
            raise NotFound(f"no static folder {folder}")

    async def find(self, workspace: str, folder: str, path: str, website: bool) -> tuple[str, bytes, str] | None:
        """(path, content, etag) of the file a request names, or None. A website answers a
        folder's path (or its own root) with its index.html."""
        if path.endswith("/") or not path:
            path += "index.html" if website else ""
        clean = safe_path(path)
        if not clean:
            return None
        candidates = [clean]
        if website and "." not in posixpath.basename(clean):
            candidates.append(f"{clean}/index.html")
        for candidate in candidates:
            row = await self.db.fetchrow(
                "SELECT content, etag FROM static_file WHERE workspace_id = $1 AND folder = $2 AND path = $3",
                workspace, folder, candidate,
            )
            if row is not None:
                return candidate, bytes(row["content"]), row["etag"]
        return None


def content_type(path: str) -> str:
    guessed = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") or guessed in ("application/javascript",) else guessed
