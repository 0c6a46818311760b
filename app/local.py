"""`flowmill` alone on a terminal: this machine's server, started in the background when none
answers on the configured address, and the terminal UI signed in as its local admin.

The local admin is made on the first start: user `admin` with a random password, shown once in
the TUI and kept in `<data dir>/admin-password` (0600, like everything in the data dir), from
where later starts read it. The server started here stops when the TUI closes, unless asked to
keep running (`--keep-server`); a server that was already running is left alone.

Nothing here imports Textual: the TUI is imported by the command that opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from app.config import Settings

if TYPE_CHECKING:
    from tui.app import FlowmillApp, Notice

ADMIN = "admin"
PASSWORD_FILE = "admin-password"
START_TIMEOUT_S = 60.0


def program() -> list[str]:
    """How to start this same program: the executable itself when frozen, else `python -m app`."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "app"]


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Flowmill server answers at `url` (its /readyz, ready or not)."""
    try:
        response = httpx.get(url + "/readyz", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    try:
        return "database" in response.json()
    except ValueError:
        return False


def read_password(home: Path) -> str | None:
    try:
        return (home / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def write_password(home: Path, password: str) -> Path:
    """Keep the local admin's password where only this user can read it."""
    path = home / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    os.chmod(path, 0o600)
    return path


class LocalServer:
    """The server of this machine's data dir, as the TUI needs it."""

    def __init__(self, settings: Settings, keep: bool = False) -> None:
        self.settings = settings
        self.keep = keep
        self.url = settings.internal_url
        self.process: subprocess.Popen[bytes] | None = None
        self.log = settings.home / "server.log"

    def ensure_started(self) -> bool:
        """Start the server in the background unless one answers; whether this started it."""
        if answers(self.url):
            return False
        self.settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            os.chmod(self.log, 0o600)
            # A session of its own: the terminal's signals (a closed window, ctrl+c) are the TUI's.
            self.process = subprocess.Popen(
                [*program(), "serve", "--host", self.settings.host, "--port", str(self.settings.port),
                 "--home", str(self.settings.home), "--database-url", self.settings.database_url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return True

    @contextlib.contextmanager
    def stopped_on_hangup(self) -> Iterator[None]:
        """While the TUI runs: a closed terminal window (SIGHUP) or a SIGTERM ends this process
        at once, which would leave the server it started serving with no one to stop it. Stop
        it first (unless kept)."""
        def end(signum: int, frame: object) -> None:
            with contextlib.suppress(OSError):  # the terminal may be gone
                self.stop()
            os._exit(128 + signum)

        before = {sig: signal.signal(sig, end) for sig in (signal.SIGHUP, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Stop the server this started, unless it is to be kept."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.keep:
            print(f"flowmill: the server keeps running at {self.url} (pid {self.process.pid}); "
                  f"stop it with: kill {self.process.pid}", file=sys.stderr)
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.settings.shutdown_timeout_s + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _exit_reason(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = next((line for line in reversed(lines) if line.startswith("flowmill:")), lines[-1] if lines else "")
        code = self.process.returncode if self.process is not None else None
        return f"the server exited ({last.strip() or f'code {code}'}); see {self.log}"

    async def boot(self, app: FlowmillApp) -> Notice | None:
        """Wait for the server, then sign in as the local admin (made on the first start); the
        admin's password to show once when it was just made."""
        from tui.client import ApiError, Disconnected, Login, Refused

        client = app.client
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise ApiError(self._exit_reason())
            try:
                await client.request("GET", "/readyz", api=False)
                break
            except (Disconnected, Refused):
                if time.monotonic() > deadline:
                    raise ApiError(f"the server did not start within {START_TIMEOUT_S:g} s; see {self.log}") from None
                await asyncio.sleep(0.05)
        password = read_password(self.settings.home)
        notice = None
        if password is None:
            password = secrets.token_urlsafe(15)
            try:
                await client.request("POST", "/auth/register", api=False,
                                     body={"username": ADMIN, "password": password})
            except Refused:
                return None  # users exist already, none of them made here: the TUI asks to sign in
            path = write_password(self.settings.home, password)
            text = (f"Flowmill made you its admin on this machine.\n\n    username  {ADMIN}\n    password  {password}\n\n"
                    f"This is the only time the password is shown; it is kept, readable only by you, in {path}, "
                    "and `flowmill` signs in with it by itself.")
            notice = ("Your local admin", text)
        client.login = Login(ADMIN, password)
        with contextlib.suppress(Refused):  # a changed password: the TUI asks to sign in
            await client.sign_in()
        if client.token is None:
            client.login = None
        return notice
