"""`flowmill backup PATH`: a consistent copy of the SQLite database while the server runs.

SQLite's online backup API copies the file a few pages at a time, with a short sleep between
steps, so that the server's writer and readers are never held up for long. One thing makes
that work under load: the copy is taken inside one read transaction on the source. Without
it, every commit of the server between two steps restarts the copy from the first page, and
under a steady write load it never ends (measured: thousands of restarts, no copy). In WAL
mode a read transaction blocks no writer; it only keeps the WAL from being checkpointed past
its snapshot while the copy runs.

The copy is written to a temporary file beside PATH, checked, synced and only then given its
name: PATH is either absent or a whole copy, never a partial one. An existing PATH is kept
unless the caller forces it.

PostgreSQL has `pg_dump` for this: `pg_dump_command` says what to run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from app.errors import FlowmillError
from app.store.postgres import split_schema

PAGES_PER_STEP = 256  # 1 MiB of 4 KiB pages: one step holds the source for about a millisecond
PAUSE_S = 0.005  # between steps, so the server's own reads and writes come first


class BackupRefused(FlowmillError):
    """The copy cannot or may not be made there."""


@dataclasses.dataclass(frozen=True)
class Copied:
    path: Path
    bytes: int
    pages: int
    seconds: float


def backup_sqlite(source: Path, target: Path, force: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  pages_per_step: int = PAGES_PER_STEP, pause_s: float = PAUSE_S) -> Copied:
    """Copy the database at `source` to `target` as it is at one moment. Refused
    (BackupRefused) when `target` exists, unless `force`, or when it cannot be written.
    `progress(done, total)` is told the pages copied after each step."""
    target = target.expanduser().absolute()
    if not source.is_file():
        raise BackupRefused(f"no database at {source}")
    if target.is_dir():
        raise BackupRefused(f"{target} is a directory; give the path of the copy to make")
    if target.exists() and (target.samefile(source) or Path(f"{source}-wal") == target):
        raise BackupRefused(f"{target} is the database itself")
    if target.exists() and not force:
        raise BackupRefused(f"{target} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise BackupRefused(f"the folder {target.parent} does not exist")
    started = time.monotonic()
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")  # 0600
    except OSError as error:
        raise BackupRefused(f"cannot write in {target.parent}: {error.strerror}") from None
    os.close(fd)
    partial = Path(name)
    try:
        pages = _copy(source, partial, progress, pages_per_step, pause_s)
        _sync(partial)
        _give_name(partial, target, force)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _sync(target.parent)
    return Copied(target, target.stat().st_size, pages, time.monotonic() - started)


def _copy(source: Path, partial: Path, progress: Callable[[int, int], None] | None,
          pages_per_step: int, pause_s: float) -> int:
    try:
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, isolation_level=None, timeout=10)
    except sqlite3.Error as error:
        raise BackupRefused(f"cannot open {source}: {error}") from None
    try:
        # The snapshot every step copies from (see the module's docstring).
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        dst = sqlite3.connect(partial, isolation_level=None)
        copied = [0]

        def step(status: int, remaining: int, total: int) -> None:
            copied[0] = total
            if progress is not None:
                progress(total - remaining, total)
            if remaining:
                time.sleep(pause_s)

        try:
            src.backup(dst, pages=pages_per_step, progress=step)
            src.execute("COMMIT")
            # One self-contained file: the copy needs no -wal beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
            problem = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as error:
        raise BackupRefused(f"the copy failed: {error}") from None
    finally:
        src.close()
    if problem != "ok":
        raise BackupRefused(f"the copy does not pass a check: {problem}")
    return copied[0]


def _give_name(partial: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)  # fails if the name was taken in the meantime: never overwrites
    except FileExistsError:
        raise BackupRefused(f"{target} exists; pass --force to replace it") from None
    partial.unlink()


def _sync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pg_dump_command(database_url: str, target: str) -> str:
    """The `pg_dump` command that backs up the database of `database_url` (and only its
    Flowmill schema, when the URL names one) to `target`; the password is left out of it."""
    dsn, schema = split_schema(database_url)
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    url = urlunsplit(parts._replace(netloc=netloc))
    command = ["pg_dump", "--format=custom", f"--file={target}"]
    if schema:
        command.append(f"--schema={schema}")
    command.append(f"--dbname={url}")
    return shlex.join(command)
