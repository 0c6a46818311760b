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


# -- behaving like the tools people know ----------------------------------------------------------------


def _bare(server: FlowmillServer, config: Path):  # type: ignore[no-untyped-def]
    """The CLI with no FLOWMILL_URL/TOKEN: only what its flags and profiles say."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    env.update(PYTHONPATH=str(ROOT), FLOWMILL_CONFIG_DIR=str(config))

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=180)

    return run


def test_login_keeps_a_token_per_profile(server: FlowmillServer, tmp_path: Path) -> None:
    cli = _bare(server, tmp_path / "config")
    server.user("cli-editor", "editor")
    unauthenticated = cli("resource-type", "list", "--url", server.url)
    assert unauthenticated.returncode == 1
    assert "401" in unauthenticated.stderr and "flowmill login" in unauthenticated.stderr
    # No terminal: the password comes on standard input.
    logged = cli("login", server.url, "--username", "cli-editor", "--password-stdin", "--profile", "work",
                 stdin="password-1234\n")
    assert logged.returncode == 0, logged.stderr
    assert "cli-editor" in logged.stderr
    stored = tmp_path / "config" / "profiles.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    profile = json.loads(stored.read_text())["profiles"]["work"]
    assert profile["url"] == server.url and profile["token"].startswith("fm_")
    # The profile is used: by name, before or after the command's arguments, and as the current one.
    assert cli("resource-type", "list").returncode == 0
    assert cli("--profile", "work", "resource-type", "list").returncode == 0
    assert cli("resource-type", "list", "--profile", "work").returncode == 0
    missing = cli("resource-type", "list", "--profile", "nope")
    assert missing.returncode == 1 and "flowmill login --profile nope" in missing.stderr
    wrong = cli("login", server.url, "--username", "cli-editor", "--password-stdin", stdin="wrong-password\n")
    assert wrong.returncode == 1 and "refused" in wrong.stderr
    no_terminal = cli("login", server.url, "--username", "cli-editor")
    assert no_terminal.returncode == 1 and "--password-stdin" in no_terminal.stderr
    # A token given is checked, then kept.
    given = cli("login", server.url, "--token", server.admin_token(), "--profile", "admin")
    assert given.returncode == 0 and "admin" in given.stderr
    assert cli("login", server.url, "--token", "fm_0000000000000000_bad", "--profile", "x").returncode == 1
    assert cli("logout", "--profile", "admin").returncode == 0
    assert "admin" not in json.loads(stored.read_text())["profiles"]


def test_options_anywhere(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "scripts"
    write(local, "f/opt/echo.py", "def main(x: int = 0):\n    return x\n")
    assert cli("sync", "push", "--dry-run", str(local)).returncode == 0
    assert cli("sync", "push", str(local)).returncode == 0
    assert json.loads(cli("run", "--arg", "x=5", "f/opt/echo").stdout) == 5
    assert json.loads(cli("run", "f/opt/echo", "--arg", "x=6").stdout) == 6


def test_generate_metadata_names_the_broken_script_and_does_the_rest(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "f/m/good.py", "def main(x: int):\n    return x\n")
    write(tmp_path, "f/m/broken.py", "def main(:\n    pass\n")
    done = cli("generate-metadata", str(tmp_path))
    assert done.returncode == 1
    assert f"{tmp_path / 'f/m/broken.py'}:1:" in done.stderr
    assert "wrote metadata for 1 script(s), 1 failed" in done.stderr
    assert (tmp_path / "f/m/good.script.yaml").exists() and not (tmp_path / "f/m/broken.script.yaml").exists()
    missing = cli("generate-metadata", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "is not a folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = cli("generate-metadata", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "holds no scripts" in empty.stderr
    assert cli("sync", "push", str(tmp_path / "empty")).returncode == 1


def test_sync_pull_writes_what_generate_metadata_writes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "scripts"
    write(local, "f/same/one.py", "def preprocessor(event):\n    return {}\n\ndef main(a: str = 'x', n: int = 1):\n    return a\n")
    write(local, "f/same/one.script.yaml", "summary: the one\ndescription: says a\ntimeout: 20\n")
    assert cli("sync", "push", str(local)).returncode == 0
    pulled = tmp_path / "pulled"
    assert cli("sync", "pull", str(pulled)).returncode == 0, "pull"
    generated = tmp_path / "generated"
    write(generated, "f/same/one.py", (local / "f/same/one.py").read_text())
    write(generated, "f/same/one.script.yaml", "summary: the one\ndescription: says a\ntimeout: 20\n")
    assert cli("generate-metadata", str(generated)).returncode == 0
    for suffix in (".script.yaml", ".lock"):
        assert (pulled / f"f/same/one{suffix}").read_text() == (generated / f"f/same/one{suffix}").read_text(), suffix


def test_user_create_without_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")}
    env.update(PYTHONPATH=str(ROOT), FLOWMILL_HOME=str(tmp_path / "home"))
    made = subprocess.run([sys.executable, "-m", "app", "user", "create", "ops", "--password-stdin"], env=env, cwd=ROOT,
                          input="a-long-password\n", capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "created ops" in made.stdout
    asked = subprocess.run([sys.executable, "-m", "app", "user", "create", "ops2"], env=env, cwd=ROOT,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 1 and "--password-stdin" in asked.stderr


def test_help_says_what_no_arguments_does() -> None:
    shown = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert shown.returncode == 0
    assert "With no command" in shown.stdout and "serve" in shown.stdout
