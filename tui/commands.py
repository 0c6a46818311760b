"""The command palette's runnables: "Run script f/…" and "Run flow f/…" for what the server
holds, and "Open run <id>" for the runs of the last minutes."""

from __future__ import annotations

from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.client import ApiError


class RunnablesProvider(Provider):
    """Reads the scripts, flows and recent runs when the palette opens (errors leave it empty)."""

    async def startup(self) -> None:
        self.items: list[tuple[str, str, Any]] = []  # (text, help, callback)
        app: Any = self.app
        try:
            scripts = await app.client.scripts()
            flows = await app.client.flows()
            runs = (await app.client.runs(limit=20)).items
        except ApiError:
            return
        for script in scripts:
            self.items.append((f"Run script {script['path']}", script.get("summary") or "a form for its arguments",
                               partial(app.start_run, "script", script["path"])))
        for flow in flows:
            self.items.append((f"Run flow {flow['path']}", flow.get("description") or "a form for its inputs",
                               partial(app.start_run, "flow", flow["id"])))
        for run in runs:
            self.items.append((f"Open run {run['id'][:8]} {run['path']}", f"{run['kind']}, {run['status']}",
                               partial(app.open_run, run["id"])))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self.items:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)

    async def discover(self) -> Hits:
        for text, help_text, callback in self.items[:30]:
            yield DiscoveryHit(text, callback, help=help_text)
