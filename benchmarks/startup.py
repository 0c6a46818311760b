"""`python -m benchmarks.startup [EXECUTABLE ...]`: how soon a server answers /readyz after it is
started, on a data dir made by a first start (the schema exists), best and median of `--rounds`
starts; and each executable's size on disk. With no executable: the source (`python -m app`)
and the builds of packaging/build.py that exist. The bar (issue 17): the one-folder build
within 1.5 s."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.servers import HOST, ROOT, Server, free_port

BUILDS = (ROOT / "dist" / "folder" / "flowmill" / "flowmill", ROOT / "dist" / "onefile" / "flowmill")


def _size_mib(executable: Path) -> float:
    """The executable, or its whole folder for the one-folder build."""
    whole = executable.parent if executable.parent.name == "flowmill" else executable
    files = [whole] if whole.is_file() else [p for p in whole.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def measure(command: list[str], rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="flowmill-start-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMILL_")} | {"FLOWMILL_HOME": home}
        times = []
        for _ in range(rounds + 1):  # the first start makes the data dir: not counted
            server = Server([*command, "serve", "--host", HOST, "--port", str(port := free_port())], env, port, "/readyz")
            times.append(server.ready_ms)
            server.stop()
    return {"bestMs": round(min(times[1:]), 1), "medianMs": round(statistics.median(times[1:]), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("executables", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    report: dict[str, object] = {"source": measure([sys.executable, "-m", "app"], args.rounds)}
    for executable in args.executables or [b for b in BUILDS if b.exists()]:
        report[str(executable)] = {**measure([str(executable.resolve())], args.rounds), "sizeMiB": _size_mib(executable)}
        print(f"{executable}: {report[str(executable)]}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
