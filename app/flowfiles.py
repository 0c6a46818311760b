"""Flows in a folder, as `sync push` and `sync pull` move them: the flow `f/<namespace>/<name>`
is the file `f/<namespace>/<name>.flow.yaml`, holding its YAML as it is saved on the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.client import Client

SUFFIX = ".flow.yaml"


def flow_files(root: Path) -> list[tuple[str, Path]]:
    """(path, file) of every `f/<namespace>/<name>.flow.yaml` below `root`."""
    return [("/".join(file.relative_to(root).parts)[: -len(SUFFIX)], file)
            for file in sorted((root / "f").glob(f"*/*{SUFFIX}"))] if (root / "f").is_dir() else []


def _server_flows(client: Client) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = client.call("GET", "/flows", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        yield from page["items"]
        cursor = page.get("nextCursor")
        if not cursor:
            return


def push(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Save every local flow that is new or changed (a new revision); counts of new, changed, unchanged."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    remote = {flow["path"]: flow for flow in _server_flows(client)}
    for path, file in flow_files(root):
        text = file.read_text()
        known = remote.get(path)
        kind, mark = ("new", "+") if known is None else ("unchanged", "=") if known["yamlContent"] == text else ("changed", "~")
        counts[kind] += 1
        if kind == "unchanged":
            continue
        say(f"{mark} {path}")
        if not dry_run:
            if known is None:
                client.call("POST", "/flows", json={"yamlContent": text})
            else:
                client.call("PUT", f"/flows/{known['id']}", json={"yamlContent": text})
    return counts


def pull(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Write every server flow into `root`; counts of new, changed, unchanged files."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    for flow in _server_flows(client):
        target = root / f"{flow['path']}{SUFFIX}"
        before = target.read_text() if target.exists() else None
        kind, mark = ("new", "+") if before is None else ("unchanged", "=") if before == flow["yamlContent"] else ("changed", "~")
        counts[kind] += 1
        if kind == "unchanged":
            continue
        say(f"{mark} {flow['path']}")
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(flow["yamlContent"])
    return counts
