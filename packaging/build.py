"""Build Flowmill's executables with PyInstaller: `python packaging/build.py`.

    dist/folder/flowmill/flowmill   one folder: the executable beside its libraries (fastest start)
    dist/onefile/flowmill           one file, to copy anywhere (unpacks itself at every start)

beside each, the desktop entry, the icon and the macOS launcher from assets/. Options:
`--form onedir|onefile` builds one only, `--dist DIR` writes elsewhere than ./dist. Needs
PyInstaller (`pip install -e '.[test]'` has it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMS = {"onedir": "folder", "onefile": "onefile"}


def build(form: str, dist: Path, work: Path, quiet: bool = False) -> Path:
    """One form of the program; the path of its executable."""
    out = dist / FORMS[form]
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(out), "--workpath",
               str(work / form), str(ROOT / "packaging" / "flowmill.spec")]
    if quiet:
        command[3:3] = ["--log-level", "WARN"]
    subprocess.run(command, cwd=ROOT, env={**os.environ, "FLOWMILL_BUILD": form}, check=True)
    executable = out / "flowmill" / "flowmill" if form == "onedir" else out / "flowmill"
    beside = executable.parent
    for name in ("flowmill.desktop", "flowmill.png", "flowmill.svg", "Flowmill.command"):
        shutil.copy2(ROOT / "assets" / name, beside / name)
    return executable


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Flowmill's executables (one folder, one file).")
    parser.add_argument("--form", choices=sorted(FORMS), action="append", help="build only this form (repeatable)")
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="where to write them (default ./dist)")
    parser.add_argument("--work", default=str(ROOT / "build"), help="PyInstaller's work dir (default ./build)")
    parser.add_argument("--quiet", action="store_true", help="PyInstaller's warnings only")
    args = parser.parse_args(argv)
    for form in args.form or ["onedir", "onefile"]:
        started = time.monotonic()
        executable = build(form, Path(args.dist), Path(args.work), args.quiet)
        whole = executable.parent if form == "onedir" else executable
        print(f"{form}: {executable} ({size(whole) / 2**20:.0f} MiB, built in {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
