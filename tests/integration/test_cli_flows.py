"""Flows from the command line: `sync push/pull` of `<name>.flow.yaml` files and `flowmill run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, FlowmillServer

FLOW = """\
name: add
namespace: cli
inputs:
  - {name: n, type: integer, required: true}
  - {name: loud, type: boolean, default: false}
tasks:
  - {name: say, type: util.log, properties: {message: "adding to {{ inputs.n }}"}}
  - {name: sum, type: util.set, properties: {value: "{{ inputs.n + 1 }}"}}
outputs:
  sum: "{{ outputs.sum.value }}"
  loud: "{{ inputs.loud }}"
"""


@pytest.fixture(scope="module")
def cli(server: FlowmillServer):  # type: ignore[no-untyped-def]
    env = {**os.environ, "FLOWMILL_URL": server.url, "FLOWMILL_TOKEN": server.admin_token(), "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    return run


def test_flows_sync_and_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "here"
    (local / "f" / "cli").mkdir(parents=True)
    (local / "f" / "cli" / "add.flow.yaml").write_text(FLOW)
    pushed = cli("sync", "push", str(local))
    assert pushed.returncode == 0, pushed.stderr
    assert "+ f/cli/add" in pushed.stdout and "1 new, 0 changed, 0 unchanged" in pushed.stderr
    assert "0 new, 0 changed, 1 unchanged" in cli("sync", "push", str(local)).stderr
    (local / "f" / "cli" / "add.flow.yaml").write_text(FLOW.replace("inputs.n + 1", "inputs.n + 2"))
    assert "~ f/cli/add" in cli("sync", "push", str(local)).stdout

    ran = cli("run", "f/cli/add", "--arg", "n=3", "--arg", "loud=true")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"sum": 5, "loud": True}
    assert "adding to 3" in ran.stderr
    refused = cli("run", "f/cli/add", "--arg", "n=three")
    assert refused.returncode == 1 and "inputs.n" in refused.stderr

    pulled = cli("sync", "pull", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "pulled" / "f" / "cli" / "add.flow.yaml").read_text() == FLOW.replace("inputs.n + 1", "inputs.n + 2")
