"""Scripts as files: a folder `f/<folder>/<name>.py` (or `u/<user>/<name>.py`) holds the script
at path `f/<folder>/<name>`, with `<name>.script.yaml` (summary, description, settings and the
inferred schema) and `<name>.lock` (pinned requirements) beside it.

`generate-metadata` writes those two files; `sync push` and `sync pull` move a folder to and
from a server, saying what changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from app.client import Client
from app.runtimes.python.deps import infer_requirements, lock_requirements
from app.runtimes.python.schema import inspect_script

SETTINGS = ("timeout", "concurrencyLimit", "concurrencyKey", "concurrencyTimeWindowS", "cacheTtl", "priority", "retry")


@dataclasses.dataclass(frozen=True)
class ScriptFile:
    path: str  # the script's path on the server, e.g. f/billing/charge
    file: Path

    @property
    def metadata_file(self) -> Path:
        return self.file.with_suffix(".script.yaml")

    @property
    def lock_file(self) -> Path:
        return self.file.with_suffix(".lock")

    def metadata(self) -> dict[str, Any]:
        if not self.metadata_file.exists():
            return {}
        return yaml.safe_load(self.metadata_file.read_text()) or {}

    def payload(self) -> dict[str, Any]:
        """What `POST /api/v1/scripts` takes for this file."""
        meta = self.metadata()
        body: dict[str, Any] = {"path": self.path, "content": self.file.read_text()}
        for key in ("summary", "description", *SETTINGS):
            if meta.get(key) is not None:
                body[key] = meta[key]
        return body


def script_files(root: Path) -> Iterator[ScriptFile]:
    """Every `u/...` or `f/...` Python file below `root`."""
    for top in ("f", "u"):
        for file in sorted((root / top).rglob("*.py")):
            relative = file.relative_to(root).with_suffix("")
            yield ScriptFile("/".join(relative.parts), file)


def generate_metadata(root: Path, say: Callable[[str], None] = print) -> int:
    """Write `.script.yaml` and `.lock` beside each script; how many scripts were done."""
    count = 0
    for script in script_files(root):
        source = script.file.read_text()
        info = inspect_script(source)
        meta = script.metadata()
        meta.setdefault("summary", "")
        meta.setdefault("description", "")
        meta["schema"] = info.schema
        if info.has_preprocessor:
            meta["hasPreprocessor"] = True
        script.metadata_file.write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
        requirements = infer_requirements(source)
        script.lock_file.write_text(lock_requirements(requirements) if requirements else "")
        say(f"  {script.path}: {len(info.schema.get('properties', {}))} argument(s), {len(requirements)} requirement(s)")
        count += 1
    return count


def _same(local: dict[str, Any], remote: dict[str, Any]) -> bool:
    return all(remote.get(key) == value for key, value in local.items() if key != "path")


def push(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Save every local script that is new or changed; counts of new, changed, unchanged."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    remote = {s["path"]: s for s in client.call("GET", "/scripts")}
    for script in script_files(root):
        body = script.payload()
        if script.path not in remote:
            kind, mark = "new", "+"
        elif _same(body, client.call("GET", f"/scripts/p/{script.path}")):
            kind, mark = "unchanged", "="
        else:
            kind, mark = "changed", "~"
        counts[kind] += 1
        if kind != "unchanged":
            say(f"{mark} {script.path}")
            if not dry_run:
                client.call("POST", "/scripts", json=body)
    return counts


def pull(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Write every server script into `root`; counts of new, changed, unchanged files."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    for item in client.call("GET", "/scripts"):
        script = client.call("GET", f"/scripts/p/{item['path']}")
        file = root / f"{script['path']}.py"
        meta = {key: script[key] for key in ("summary", "description", *SETTINGS) if script.get(key) not in (None, "", 0)}
        meta["schema"] = script["schema"]
        meta_text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
        target = ScriptFile(script["path"], file)
        if not file.exists():
            kind, mark = "new", "+"
        elif file.read_text() == script["content"] and target.metadata() == meta:
            kind, mark = "unchanged", "="
        else:
            kind, mark = "changed", "~"
        counts[kind] += 1
        if kind == "unchanged":
            continue
        say(f"{mark} {script['path']}")
        if not dry_run:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(script["content"])
            target.metadata_file.write_text(meta_text)
            if script.get("lock"):
                target.lock_file.write_text(script["lock"])
    return counts
