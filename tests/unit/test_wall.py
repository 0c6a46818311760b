"""What the wall grants: the wanted folders, less the data dir, however deep it lies in them."""

from __future__ import annotations

import os
from pathlib import Path

from app.runtimes.python.wall import FILE_RIGHTS, READ, READ_EXECUTE, grants


def tree(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).mkdir(parents=True, exist_ok=True)


def test_a_folder_that_holds_the_data_dir_is_granted_but_for_it(tmp_path: Path) -> None:
    tree(tmp_path, "opt/tool/bin", "opt/other", "opt/flowmill/data/cache", "opt/flowmill/lib")
    (tmp_path / "opt/readme").write_text("x")
    os.symlink(tmp_path / "opt/flowmill/data", tmp_path / "opt/shortcut")  # a way round: not granted
    os.symlink(tmp_path / "opt/tool", tmp_path / "opt/tool-link")  # leads where it is granted anyway
    opt = tmp_path / "opt"
    granted = dict(grants([(str(opt), READ_EXECUTE)], [str(opt / "flowmill/data")]))
    assert granted == {
        str(opt / "flowmill/lib"): READ_EXECUTE, str(opt / "other"): READ_EXECUTE,
        str(opt / "readme"): READ_EXECUTE & FILE_RIGHTS, str(opt / "tool"): READ_EXECUTE,
    }


def test_what_does_not_hold_the_data_dir_is_granted_whole_and_once(tmp_path: Path) -> None:
    tree(tmp_path, "usr/lib/python", "home/data")
    usr = str(tmp_path / "usr")
    granted = grants([(usr, READ_EXECUTE), (usr + "/lib/python", READ), (str(tmp_path / "missing"), READ)],
                     [str(tmp_path / "home/data")])
    assert granted == [(usr, READ_EXECUTE)]


def test_the_data_dir_itself_and_what_is_in_it_are_never_granted(tmp_path: Path) -> None:
    tree(tmp_path, "data/cache/python")
    data = str(tmp_path / "data")
    assert grants([(data, READ_EXECUTE), (data + "/cache/python", READ)], [data]) == []
    assert grants([(str(tmp_path), READ)], [data]) == []
