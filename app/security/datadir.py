"""The data dir is this user's alone: 0700, and every file in it 0600.

It holds the master key, the JWT signing key, the SQLite database and the fork server's
sockets. The server sets its umask to 077 at start, so that whatever it creates later (the
database's -wal and -shm files, logs, dependency caches) is born private, and puts right what
an older version, a restore or a hand-made copy left readable.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.errors import StartupError

PRIVATE_UMASK = 0o077


def secure_data_dir(home: Path, database: Path | None = None) -> None:
    """Make `home` (created if need be) 0700 and what it holds private; the same for a SQLite
    `database` file kept elsewhere, and its -wal, -shm and -journal files."""
    os.umask(PRIVATE_UMASK)
    if home.exists() and not home.is_dir():
        raise StartupError(f"the data dir {home} is not a directory (set FLOWMILL_HOME)")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        for entry in os.scandir(home):
            _private(entry.path, entry.is_dir(follow_symlinks=False), entry.is_symlink())
        if database is not None:
            for path in (database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm", "-journal"))):
                if path.exists():
                    _private(str(path), path.is_dir(), path.is_symlink())
    except OSError as error:
        raise StartupError(f"cannot use the data dir {home}: {error.strerror}") from None


def _private(path: str, is_dir: bool, is_link: bool) -> None:
    if not is_link:  # a link's target is not ours to change
        os.chmod(path, 0o700 if is_dir else 0o600)
