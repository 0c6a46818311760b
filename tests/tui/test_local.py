"""`flowmill` alone: the local server started for the TUI when none answers (stopped with it
unless kept), the local admin made on the first start with its password shown once and kept
0600 in the data dir, and reused after; without a terminal, `flowmill` serves."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_settings
from app.local import PASSWORD_FILE, LocalServer
from tests.support import ROOT, free_port, wait_for
from tests.tui.conftest import drive, screen_text, until
from tui.app import FlowmillApp
from tui.client import FlowmillClient
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import NoticeScreen
from tui.widgets.tables import Table


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return tmp_path / "data"


def local(home: Path, port: int, keep: bool = False) -> LocalServer:
    return LocalServer(load_settings({"FLOWMILL_HOME": str(home), "FLOWMILL_PORT": str(port)}), keep=keep)


def open_tui(server: LocalServer, scenario: Any) -> FlowmillApp:
    app = FlowmillApp(FlowmillClient(server.url), boot=server.boot)
    drive(app, (80, 24), scenario)
    return app


def test_the_first_start_makes_the_admin_and_later_ones_sign_in_with_it(home: Path) -> None:
    port = free_port()
    first = local(home, port)
    assert first.ensure_started()
    shown: dict[str, str] = {}

    async def first_start(pilot: Any) -> None:
        app = pilot.app
        assert app.banner.startswith("Starting")
        notice = await until(pilot, lambda: isinstance(app.screen, NoticeScreen) and app.screen, timeout_s=30,
                             what="the password")
        shown["text"] = notice.text
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and "admin (admin)" in screen_text(app),
                    what="the dashboard, signed in")
        assert not app.banner

    try:
        open_tui(first, first_start)
    finally:
        first.stop()
    assert first.process is not None and first.process.poll() is not None  # stopped with the TUI
    path = home / PASSWORD_FILE
    password = path.read_text().strip()
    assert password in shown["text"] and str(path) in shown["text"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = local(home, port, keep=True)
    assert again.ensure_started()

    async def later_start(pilot: Any) -> None:
        app = pilot.app
        await until(pilot, lambda: app.client.token and not app.booting, timeout_s=30, what="signed in")
        await pilot.press("2")
        await until(pilot, lambda: app.screen.query_one("#scripts", Table).border_title == "Scripts: 0", what="scripts")
        assert not isinstance(app.screen, NoticeScreen)  # shown once only

    try:
        open_tui(again, later_start)
        again.stop()  # kept: still serving
        assert httpx.get(again.url + "/readyz").status_code == 200
        assert not local(home, port).ensure_started()  # one answers: none is started
    finally:
        assert again.process is not None
        again.process.terminate()
        again.process.wait(20)


def test_a_running_server_is_used_and_left_running(home: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    running = subprocess.Popen([sys.executable, "-m", "app", "serve", "--home", str(home), "--port", str(port)],
                               cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: local(home, port).url and _ready(port), 30, "the server")
        server = local(home, port)
        assert not server.ensure_started()

        async def scenario(pilot: Any) -> None:
            await until(pilot, lambda: isinstance(pilot.app.screen, NoticeScreen), timeout_s=15, what="the admin made")

        open_tui(server, scenario)
        server.stop()
        assert running.poll() is None
    finally:
        running.terminate()
        running.wait(20)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_without_a_terminal_flowmill_serves(home: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    env.update(FLOWMILL_HOME=str(home), FLOWMILL_PORT=str(port), PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _ready(port), 30, "the server")
        assert not (home / PASSWORD_FILE).exists()  # no TUI, no local admin made
    finally:
        process.terminate()
        assert process.wait(20) == 0


def test_the_command_line_does_not_load_textual() -> None:
    code = ("import sys, app.cli, app.local; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_flowmill_tui_remembers_the_server_and_token_in_the_profile(server: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.profiles import Profiles

    opened: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli, "_open_tui", lambda *args, **kwargs: opened.append(args) or 0)
    monkeypatch.setenv("FLOWMILL_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("FLOWMILL_URL", "FLOWMILL_TOKEN", "FLOWMILL_PROFILE", "FLOWMILL_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    token = server.admin_token()
    assert cli.main(["tui", "--url", server.url, "--token", token, "--profile", "lab"]) == 0
    kept = Profiles(tmp_path / "config").get("lab")
    assert kept is not None and (kept.url, kept.token, kept.username) == (server.url, token, "admin")
    assert cli.main(["tui", "--profile", "lab"]) == 0  # remembered: nothing else to give
    assert opened[-1][:2] == (server.url, token)
    assert cli.main(["tui", "--url", server.url, "--token", "not-a-token", "--profile", "other"]) == 0
    assert Profiles(tmp_path / "config").get("other") is None  # a refused token is not kept
