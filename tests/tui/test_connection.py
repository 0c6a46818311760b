"""A server that goes away shows as a banner; the TUI probes it with backoff and comes back by
itself, reloading what it shows, when it answers again."""

from __future__ import annotations

from typing import Any

from tests.support import FlowmillServer
from tests.tui.conftest import drive, screen_text, until
from tui.app import FlowmillApp
from tui.client import FlowmillClient
from tui.screens.run import RunScreen
from tui.widgets.tables import Table


def test_a_lost_server_is_a_banner_until_it_answers_again(fresh_server: FlowmillServer) -> None:
    fresh_server.start()
    token = fresh_server.admin_token()
    with fresh_server.client(token) as api:
        api.post("/api/v1/scripts", json={"path": "f/c/one", "content": "def main():\n    print('one')\n    return 1\n"})
        first = api.post("/api/v1/jobs/run_wait_result/p/f/c/one", json={}).headers["x-job-id"]
    app = FlowmillApp(FlowmillClient(fresh_server.url, token))
    app.retry_delays = (0.2, 0.4, 0.8)

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await until(pilot, lambda: app.screen.query_one("#runs", Table).row_count == 1, what="the run")
        fresh_server.stop()
        await until(pilot, lambda: app.offline and app.banner, timeout_s=10, what="the banner")
        assert "⚠" in screen_text(app)  # shown on the screen, under the section bar
        await pilot.press("1")  # still usable: the sections open, and wait with the banner
        await pilot.press("6")
        await until(pilot, lambda: "No answer" in app.banner, what="the probing said")
        fresh_server.start()
        with fresh_server.client(token) as api:  # something new while the TUI was away
            api.post("/api/v1/jobs/run_wait_result/p/f/c/one", json={})
        await until(pilot, lambda: not app.offline and not app.banner, timeout_s=10, what="the way back")
        await until(pilot, lambda: app.screen.query_one("#runs", Table).row_count == 2, what="the page reloaded")
        app.open_run(first)
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run, what="a run")

    drive(app, (80, 24), scenario)
