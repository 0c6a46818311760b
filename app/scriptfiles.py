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
from typing import TYPE_CHECKING, Any

import yaml

from app.client import Client
from app.errors import FlowmillError
from app.runtimes.python.deps import InstallError, infer_requirements, lock_requirements
from app.runtimes.python.schema import ScriptSyntaxError, inspect_script

if TYPE_CHECKING:
    from rich.progress import Progress

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


class FolderError(FlowmillError):
    """The folder is not one of scripts: missing, or holding no `f/` or `u/` script."""


def script_files(root: Path) -> list[ScriptFile]:
    """Every `u/...` or `f/...` Python file below `root`; FolderError when `root` does not
    exist or holds none (a mistyped folder must not pass for an empty one)."""
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder")
    found = [
        ScriptFile("/".join(file.relative_to(root).with_suffix("").parts), file)
        for top in ("f", "u") for file in sorted((root / top).rglob("*.py"))
    ]
    if not found:
        raise FolderError(f"{root} holds no scripts (they are f/<folder>/<name>.py or u/<user>/<name>.py)")
    return found


def metadata_text(existing: dict[str, Any], summary: str, description: str, settings: dict[str, Any],
                  schema: dict[str, Any], has_preprocessor: bool) -> str:
    """A `.script.yaml`, the same whoever writes it (`generate-metadata` or `sync pull`): what the
    file held already, then summary, description, the settings that are set, the schema."""
    meta = dict(existing)
    meta["summary"] = summary
    meta["description"] = description
    for key in SETTINGS:
        value = settings.get(key)
        if value not in (None, "", 0):
            meta[key] = int(value) if isinstance(value, float) and value.is_integer() else value  # 20, not 20.0
    meta["schema"] = schema
    meta.pop("hasPreprocessor", None)
    if has_preprocessor:
        meta["hasPreprocessor"] = True
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def lock_text(source: str) -> str:
    """A `.lock`: the pinned requirements of the script's imports ("" when it needs none)."""
    requirements = infer_requirements(source)
    return lock_requirements(requirements) if requirements else ""


@dataclasses.dataclass
class MetadataReport:
    done: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)  # "<file>:<line>:<column>: <message>"


def generate_metadata(root: Path, say: Callable[[str], None] = print, progress: Progress | None = None) -> MetadataReport:
    """Write `.script.yaml` and `.lock` beside each script. A script that does not compile (or
    whose requirements cannot be resolved) is reported, with its file and line, and the others
    are still done."""
    report = MetadataReport()
    scripts = script_files(root)
    for script in _steps(scripts, progress, "metadata"):
        source = script.file.read_text()
        try:
            info = inspect_script(source)
            lock = lock_text(source)
        except ScriptSyntaxError as error:
            report.failed.append(f"{script.file}:{error.line}:{error.column}: {error.message}")
            continue
        except InstallError as error:
            report.failed.append(f"{script.file}: cannot resolve its requirements: {error.message}")
            continue
        meta = script.metadata()
        script.metadata_file.write_text(metadata_text(
            meta, str(meta.get("summary") or ""), str(meta.get("description") or ""), meta, info.schema,
            info.has_preprocessor,
        ))
        script.lock_file.write_text(lock)
        requirements = len([line for line in lock.splitlines() if line and not line.startswith("#")])
        say(f"  {script.path}: {len(info.schema.get('properties', {}))} argument(s), {requirements} pinned requirement(s)")
        report.done += 1
    return report


def _steps(items: list[ScriptFile] | list[dict[str, Any]], progress: Progress | None, what: str) -> Iterator[Any]:
    """`items`, one by one, advancing `progress` (when there is one) as each is done."""
    if progress is None:
        yield from items
        return
    task = progress.add_task(what, total=len(items))
    for item in items:
        yield item
        progress.advance(task)


def _same(local: dict[str, Any], remote: dict[str, Any]) -> bool:
    return all(remote.get(key) == value for key, value in local.items() if key != "path")


def push(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print,
         progress: Progress | None = None) -> dict[str, int]:
    """Save every local script that is new or changed; counts of new, changed, unchanged."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    scripts = script_files(root)
    remote = {s["path"]: s for s in client.call("GET", "/scripts")}
    for script in _steps(scripts, progress, "push"):
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


def pull(client: Client, root: Path, dry_run: bool = False, say: Callable[[str], None] = print,
         progress: Progress | None = None) -> dict[str, int]:
    """Write every server script into `root`, with the `.script.yaml` and `.lock` that
    `generate-metadata` would write; counts of new, changed, unchanged files."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    for item in _steps(client.call("GET", "/scripts"), progress, "pull"):
        script = client.call("GET", f"/scripts/p/{item['path']}")
        target = ScriptFile(script["path"], root / f"{script['path']}.py")
        meta_text = metadata_text({}, script.get("summary") or "", script.get("description") or "", script,
                                  script["schema"], bool(script.get("hasPreprocessor")))
        lock = script.get("lock")
        if lock is None:  # never run on the server yet: pinned here, as generate-metadata pins it
            lock = lock_text(script["content"])
        if not target.file.exists():
            kind, mark = "new", "+"
        elif (target.file.read_text() == script["content"] and _read(target.metadata_file) == meta_text
              and _read(target.lock_file) == lock):
            kind, mark = "unchanged", "="
        else:
            kind, mark = "changed", "~"
        counts[kind] += 1
        if kind == "unchanged":
            continue
        say(f"{mark} {script['path']}")
        if not dry_run:
            target.file.parent.mkdir(parents=True, exist_ok=True)
            target.file.write_text(script["content"])
            target.metadata_file.write_text(meta_text)
            target.lock_file.write_text(lock)
    return counts


def _read(file: Path) -> str | None:
    return file.read_text() if file.exists() else None
