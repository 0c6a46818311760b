"""One server per SQLite data dir: a lock held for the life of the process.

`flowmill serve` on SQLite takes `<home>/server.lock` (and `<database>.lock` beside a SQLite
file kept outside the home) before anything else touches the data dir: a second server on the
same home or the same file is refused in one line, before it chmods a file, binds a fork-server
socket, migrates or writes the key canary. The lock is `flock`, so it goes with the process
however it ends (`kill -9` included) and a stale pid in the file is no obstacle.

On PostgreSQL several processes may serve one database (each with its own home, or sharing
one): no lock is taken, and each process keeps its fork-server sockets in `<home>/run/<pid>/`
(`app.services.runtime_dir`), so that none removes or binds another's.

`flowmill migrate` and `flowmill user create` take the same lock: a schema changed under a
running server of another version would leave it working on tables it does not know.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from app.config import Settings
from app.errors import StartupError

LOCK_NAME = "server.lock"


class DataDirLock:
    """The locks this process holds (open descriptors); released by `release` or at exit."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def hold(self, path: Path, what: str) -> None:
        """Lock `path` (created 0600) or refuse: another process holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StartupError(f"cannot open the lock {path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"another Flowmill process (pid {pid})" if pid else "another Flowmill process"
            raise StartupError(f"{who} is serving {what}; stop it first or use another FLOWMILL_HOME") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fds.append(fd)

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def claim(settings: Settings) -> DataDirLock:
    """Hold the data dir (and a SQLite file kept outside it) for this process, or refuse with
    a one-line reason. Nothing is locked on PostgreSQL (see `runtime_dir`)."""
    held = DataDirLock()
    if not settings.is_sqlite:
        return held
    home = settings.home
    if home.exists() and not home.is_dir():
        raise StartupError(f"the data dir {home} is not a directory (set FLOWMILL_HOME)")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"cannot use the data dir {home}: {error.strerror}") from None
    try:
        held.hold(home / LOCK_NAME, str(home))
        database = settings.sqlite_path
        if not database.resolve().is_relative_to(home.resolve()) and database.parent.is_dir():
            held.hold(Path(f"{database}.lock"), str(database))
    except BaseException:
        held.release()
        raise
    return held


def owner_pid(home: Path) -> int | None:
    """The pid of the server holding `home`, or None when none does (for `doctor`)."""
    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None
