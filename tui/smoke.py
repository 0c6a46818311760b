"""`flowmill _tui-smoke URL`: open the TUI headless on a server (its token in FLOWMILL_TOKEN),
visit every section and a run, and say what the home screen showed; exit 1 if anything failed.
It checks that an executable carries the whole TUI (its stylesheet, Textual's, the highlighter)
on a machine with no terminal to open it on."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from tui.app import FlowmillApp
from tui.client import FlowmillClient
from tui.screens.dialogs import LoginScreen
from tui.widgets.nav import SECTIONS


def screen_text(app: FlowmillApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def smoke(url: str, token: str | None, size: tuple[int, int] = (80, 24)) -> int:
    app = FlowmillApp(FlowmillClient(url, token))
    report: dict[str, Any] = {"visited": [], "home": "", "problem": None}

    async def visit(pilot: Any) -> None:
        started = time.monotonic()
        while "ok, ready" not in screen_text(app):
            if isinstance(app.screen, LoginScreen) or time.monotonic() - started > 20:
                report["problem"] = "the home screen did not show the server ready:\n" + screen_text(app)
                app.exit(return_code=1)
                return
            await asyncio.sleep(0.05)
        report["home"] = screen_text(app)
        for mode, key, _, _ in SECTIONS:
            await pilot.press(key)
            await asyncio.sleep(0.3)
            if app.current_mode != mode:
                report["problem"] = f"key {key} did not open {mode}"
                app.exit(return_code=1)
                return
            report["visited"].append(mode)
        app.exit()

    code = app.run(headless=True, size=size, auto_pilot=visit)
    if report["problem"] or app.return_code:
        print(f"the TUI failed: {report['problem'] or app.return_code}", file=sys.stderr)
        return 1
    print(report["home"])
    print(f"visited {len(report['visited'])} sections at {size[0]}x{size[1]}: {' '.join(report['visited'])}")
    return int(code or 0)
