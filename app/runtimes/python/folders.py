"""Where runs write: each child's own folder (its cwd, HOME and TMPDIR), made in a run root of
the fork server's in the system's temporary folder, never inside the data dir, and removed
with what the run left in it."""

from __future__ import annotations

import os
from typing import Any

from app.runtimes.python.wall import within

RUN_ROOT_PREFIX = "flowmill-runs-"


def remove_folder(folder: str) -> bool:
    """Remove a child's folder and what its run left in it; False if it cannot be yet."""
    try:
        os.rmdir(folder)  # most runs write nothing there
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    import shutil  # once, in the fork server, the first time a run leaves files

    def make_ours(function: Any, path: str, error: Any) -> None:
        # A folder the script made unreadable or read-only is ours: make it removable again.
        for place in (path, os.path.dirname(path)):
            if os.path.isdir(place) and not os.path.islink(place):
                try:
                    os.chmod(place, 0o700)
                except OSError:
                    pass

    for _attempt in range(8):  # each pass opens one more level of folders made unreadable
        shutil.rmtree(folder, onerror=make_ours)
        if not os.path.lexists(folder):
            return True
    return False


def make_run_root(denied: list[str]) -> str | None:
    """The folder of this fork server's children's own folders: in the system's temporary
    folder, never inside the data dir. Folders left by fork servers that were killed go."""
    for base in (os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp"):
        base = os.path.realpath(base) if base else ""
        if not base or not os.path.isdir(base) or any(within(base, folder) for folder in denied):
            continue
        _remove_stale_roots(base)
        root = os.path.join(base, f"{RUN_ROOT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(root, 0o700)
        except OSError:
            continue
        return root
    return None


def _remove_stale_roots(base: str) -> None:
    try:
        entries = [entry for entry in os.listdir(base) if entry.startswith(RUN_ROOT_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry[len(RUN_ROOT_PREFIX):].partition("-")[0]
        path = os.path.join(base, entry)
        try:
            if not pid.isdigit() or os.lstat(path).st_uid != os.getuid() or os.path.islink(path):
                continue
            os.kill(int(pid), 0)
            continue  # its fork server still runs
        except ProcessLookupError:
            remove_folder(path)
        except OSError:
            continue

