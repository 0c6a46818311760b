"""The command line against a real server: run, sync, generate-metadata, resource types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, FlowmillServer


@pytest.fixture(scope="module")
def cli(server: FlowmillServer):  # type: ignore[no-untyped-def]
    env = {**os.environ, "FLOWMILL_URL": server.url, "FLOWMILL_TOKEN": server.admin_token(), "PYTHONPATH": str(ROOT)}

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=cwd or ROOT,
                              capture_output=True, text=True, timeout=180)

    return run


def write(root: Path, path: str, text: str) -> Path:
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def test_sync_push_run_and_pull(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "scripts"
    write(local, "f/cli/hello.py", "def main(name: str = 'world', n: int = 1):\n    print('hello', name)\n    return {'name': name, 'n': n}\n")
    write(local, "f/cli/hello.script.yaml", "summary: says hello\ntimeout: 30\n")
    write(local, "u/admin/fails.py", "def main():\n    raise RuntimeError('nope')\n")
    pushed = cli("sync", "push", str(local))
    assert pushed.returncode == 0, pushed.stderr
    assert "+ f/cli/hello" in pushed.stdout and "+ u/admin/fails" in pushed.stdout
    assert "2 new, 0 changed, 0 unchanged" in pushed.stderr
    again = cli("sync", "push", str(local))
    assert "0 new, 0 changed, 2 unchanged" in again.stderr
    write(local, "f/cli/hello.py", "def main(name: str = 'world', n: int = 2):\n    print('hello', name)\n    return {'name': name, 'n': n}\n")
    dry = cli("sync", "push", str(local), "--dry-run")
    assert "~ f/cli/hello" in dry.stdout and "would change" in dry.stderr
    assert "1 changed" in cli("sync", "push", str(local)).stderr

    ran = cli("run", "f/cli/hello", "--arg", "name=bob", "--arg", "n=3")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"name": "bob", "n": 3}
    assert "hello bob" in ran.stderr
    failed = cli("run", "u/admin/fails")
    assert failed.returncode == 1 and "RuntimeError: nope" in failed.stderr
    assert cli("run", "f/cli/none").returncode == 1

    pulled_root = tmp_path / "pulled"
    pulled = cli("sync", "pull", str(pulled_root))
    assert pulled.returncode == 0, pulled.stderr
    assert (pulled_root / "f/cli/hello.py").read_text().count("n: int = 2") == 1
    meta = yaml.safe_load((pulled_root / "f/cli/hello.script.yaml").read_text())
    assert meta["summary"] == "says hello" and meta["timeout"] == 30 and "name" in meta["schema"]["properties"]
    assert "0 new, 0 changed" in cli("sync", "pull", str(pulled_root)).stderr


def test_generate_metadata(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "f/meta/plain.py", "def main(x: int, y: str = 'a'):\n    return x\n")
    write(tmp_path, "f/meta/deps.py", "import humanize\ndef main(n: int):\n    return humanize.intcomma(n)\n")
    done = cli("generate-metadata", str(tmp_path))
    assert done.returncode == 0, done.stderr
    plain = yaml.safe_load((tmp_path / "f/meta/plain.script.yaml").read_text())
    assert plain["schema"]["required"] == ["x"] and plain["schema"]["properties"]["y"]["default"] == "a"
    assert (tmp_path / "f/meta/plain.lock").read_text() == ""
    assert "humanize==" in (tmp_path / "f/meta/deps.lock").read_text()


def test_resource_types(cli) -> None:  # type: ignore[no-untyped-def]
    listed = cli("resource-type", "list")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"postgresql", "mysql", "redis", "s3", "smtp", "slack", "http_bearer", "http_basic"} <= names
    with_schema = cli("resource-type", "list", "--schema")
    assert '"host"' in with_schema.stdout
