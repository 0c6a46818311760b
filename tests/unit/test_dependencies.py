"""A script's dependencies: inferred from its imports, locked with pip, installed once into a
cache keyed by the lock. The install is real: `humanize`, small and pure Python, from PyPI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.runtimes.python.deps import (
    Environment,
    InstallError,
    ensure_environment,
    ensure_locked_environment,
    infer_requirements,
    lock_requirements,
)

NO_PYTHON = "/nonexistent/python"  # any call that runs pip with it fails: proof that none ran


# -- inference -----------------------------------------------------------------------------------


def test_the_standard_library_and_the_runtime_are_not_requirements() -> None:
    source = (
        "from __future__ import annotations\nimport os, sys, json\nimport os.path\nfrom collections import abc\n"
        "import asyncio, sqlite3, tomllib, zoneinfo\nimport wmill\nfrom wmill import get_variable\nimport flowmill\n"
        "from f.shared.util import helper\n"
    )
    assert infer_requirements(source) == []


def test_imports_anywhere_become_sorted_unique_requirements() -> None:
    source = (
        "import requests\nimport requests.adapters\nfrom httpx import Client\nimport numpy as np\n"
        "def main():\n    import humanize\n    from pandas import DataFrame\n    return humanize\n"
        "class A:\n    def f(self):\n        import requests\n"
    )
    assert infer_requirements(source) == ["httpx", "humanize", "numpy", "pandas", "requests"]


def test_relative_imports_are_the_scripts_own() -> None:
    assert infer_requirements("from . import sibling\nfrom .lib import x\nfrom ..up import y\nimport humanize\n") == [
        "humanize"
    ]


@pytest.mark.parametrize("statement, package", [
    ("import yaml", "pyyaml"),
    ("from PIL import Image", "pillow"),
    ("import sklearn.linear_model", "scikit-learn"),
    ("import cv2", "opencv-python"),
    ("from bs4 import BeautifulSoup", "beautifulsoup4"),
    ("from dateutil import parser", "python-dateutil"),
    ("from dotenv import load_dotenv", "python-dotenv"),
    ("import jwt", "pyjwt"),
    ("import psycopg2", "psycopg2-binary"),
    ("import MySQLdb", "mysqlclient"),
    ("from Crypto.Cipher import AES", "pycryptodome"),
    ("from googleapiclient.discovery import build", "google-api-python-client"),
    ("import attr", "attrs"),
    ("import magic", "python-magic"),
    ("import serial", "pyserial"),
    ("import usb.core", "pyusb"),
    ("import zmq", "pyzmq"),
    ("import docx", "python-docx"),
    ("from pptx import Presentation", "python-pptx"),
    ("import Levenshtein", "python-levenshtein"),
    ("from slugify import slugify", "python-slugify"),
    ("import telegram", "python-telegram-bot"),
    ("from jose import jwt", "python-jose"),
    ("import multipart", "python-multipart"),
    ("import dns.resolver", "dnspython"),
    ("from OpenSSL import crypto", "pyopenssl"),
    ("import fitz", "pymupdf"),
    ("from skimage import io", "scikit-image"),
    ("import snowflake.connector", "snowflake-connector-python"),
    ("from snowflake.snowpark import Session", "snowflake-snowpark-python"),
    ("import paho.mqtt.client as mqtt", "paho-mqtt"),
])
def test_import_names_map_to_pypi_names(statement: str, package: str) -> None:
    assert infer_requirements(statement + "\n") == [package]


@pytest.mark.parametrize("statement, packages", [
    ("from google.cloud import storage", ["google-cloud-storage"]),
    ("from google.cloud import storage, bigquery", ["google-cloud-bigquery", "google-cloud-storage"]),
    ("import google.cloud.storage", ["google-cloud-storage"]),
    ("from google.cloud.storage import Blob", ["google-cloud-storage"]),
    ("from google.cloud import pubsub_v1", ["google-cloud-pubsub"]),
    ("from google.cloud import secretmanager", ["google-cloud-secret-manager"]),
    ("import google.auth", ["google-auth"]),
    ("from google.oauth2 import service_account", ["google-auth"]),
    ("from google.protobuf import json_format", ["protobuf"]),
    ("from google import genai", ["google-genai"]),
    ("import google", []),
    ("import google.cloud", []),
    ("from azure.storage.blob import BlobServiceClient", ["azure-storage-blob"]),
    ("from azure.identity import DefaultAzureCredential", ["azure-identity"]),
])
def test_namespace_packages(statement: str, packages: list[str]) -> None:
    assert infer_requirements(statement + "\n") == packages


def test_an_inline_block_overrides_inference() -> None:
    source = (
        "import yaml\nimport requests\n"
        "# requirements:\n#humanize==4.9.0\n# tabulate>=0.9  # for tables\n#humanize==4.9.0\n"
        "import pandas\ndef main():\n    pass\n"
    )
    assert infer_requirements(source) == ["humanize==4.9.0", "tabulate>=0.9"]


def test_the_inline_block_ends_at_an_empty_comment_as_in_windmill() -> None:
    source = "#requirements:\n#burkina==0.4\n#nigeria\n#\n# This script does things.\nimport os\n"
    assert infer_requirements(source) == ["burkina==0.4", "nigeria"]


def test_an_empty_inline_block_means_no_requirements() -> None:
    assert infer_requirements("# requirements:\nimport requests\n") == []


def test_a_script_that_does_not_parse_has_no_requirements() -> None:
    assert infer_requirements("import requests\ndef main(:\n") == []


# -- locking and installing, for real -------------------------------------------------------------


@dataclass
class Installed:
    environment: Environment
    cache: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """`humanize` installed once for this module, by three runs asking for it at the same time."""
    cache = tmp_path_factory.mktemp("envs")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: ensure_environment(["humanize"], cache), range(3)))
    assert len(set(results)) == 1
    environment = results[0]
    yield Installed(environment, cache)


def test_the_lock_pins_exact_versions(installed: Installed) -> None:
    lines = installed.environment.lock.splitlines()
    assert lines[0] == "# python {}.{}".format(*sys.version_info[:2])
    assert len(lines) >= 2 and lines[1].startswith("humanize==")
    assert all("==" in line for line in lines[1:]) and lines[1:] == sorted(lines[1:])
    assert lock_requirements(["humanize"]) == installed.environment.lock  # remembered: no pip this time


def test_the_environment_is_a_folder_named_by_the_lock(installed: Installed) -> None:
    environment = installed.environment
    assert environment.key == hashlib.sha256(environment.lock.encode()).hexdigest()[:16]
    assert environment.path is not None and environment.path.is_dir()
    assert environment.path.is_relative_to(installed.cache / environment.key)
    # the three concurrent runs made one folder, and left no half-made one behind
    assert [p.name for p in installed.cache.iterdir()] == [environment.key]


def test_a_script_imports_the_package_from_that_folder(installed: Installed) -> None:
    path = installed.environment.path
    assert path is not None
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import humanize\n"
        "print(humanize.__file__); print(humanize.intcomma(1234567))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    where, formatted = done.stdout.splitlines()
    assert Path(where).is_relative_to(path) and formatted == "1,234,567"


def test_a_second_call_reuses_the_cache_at_once(installed: Installed) -> None:
    path = installed.environment.path
    assert path is not None
    before = (path.stat().st_mtime_ns, sorted(p.name for p in installed.cache.iterdir()))
    started = time.monotonic()
    again = ensure_environment(["humanize"], installed.cache)
    elapsed = time.monotonic() - started
    assert again == installed.environment
    assert elapsed < 1.0
    assert (path.stat().st_mtime_ns, sorted(p.name for p in installed.cache.iterdir())) == before
    # With an interpreter that does not exist, any pip run would fail: none is made.
    assert ensure_locked_environment(installed.environment.lock, installed.cache, python=NO_PYTHON) == again


def test_a_lock_written_elsewhere_finds_the_same_folder(installed: Installed) -> None:
    crlf = installed.environment.lock.replace("\n", "\r\n") + "\r\n\r\n"
    same = ensure_locked_environment(crlf, installed.cache, python=NO_PYTHON)
    assert same.path == installed.environment.path


def test_nothing_to_install_runs_nothing(tmp_path: Path) -> None:
    assert ensure_environment([], tmp_path, python=NO_PYTHON) == Environment("", "", None)
    assert ensure_locked_environment("# python 3.11\n", tmp_path, python=NO_PYTHON).path is None
    assert lock_requirements([], python=NO_PYTHON) == ""
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_package_fails_with_pips_message(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as raised:
        ensure_environment(["nonexistent-pkg-xyz"], tmp_path)
    assert "No matching distribution found for nonexistent-pkg-xyz" in raised.value.message
    assert "WARNING" not in raised.value.message  # trimmed to what matters
    assert list(tmp_path.iterdir()) == []


def test_a_failed_install_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as raised:
        ensure_locked_environment("# python 3.11\nnonexistent-pkg-xyz==1.0\n", tmp_path)
    assert "nonexistent-pkg-xyz" in raised.value.message
    assert list(tmp_path.iterdir()) == []  # no folder at the key, no staging folder


def test_pip_that_cannot_run_is_an_install_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as raised:
        ensure_environment(["humanize==4.9.0"], tmp_path, python=NO_PYTHON)
    assert NO_PYTHON in raised.value.message


def test_a_timeout_is_an_install_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as raised:
        lock_requirements(["humanize<4.9"], timeout_s=0.05)
    assert "did not finish within 0.05 s" in raised.value.message


def test_an_option_is_not_a_requirement() -> None:
    with pytest.raises(InstallError):
        lock_requirements(["--index-url=https://example.invalid/simple"])


RACE = """
import sys
from pathlib import Path
from app.runtimes.python.deps import ensure_locked_environment
print(ensure_locked_environment(sys.argv[1], Path(sys.argv[2])).path)
"""


def test_processes_installing_the_same_lock_at_once_share_one_folder(tmp_path: Path) -> None:
    lock = "# python {}.{}\nhumanize==4.9.0\n".format(*sys.version_info[:2])
    racers = [
        subprocess.Popen([sys.executable, "-c", RACE, lock, str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and (Path(paths.pop()) / "humanize").is_dir()
    assert len(list(tmp_path.iterdir())) == 1  # the loser's staging folder is gone


def test_a_folder_at_the_key_that_is_no_environment_is_replaced(tmp_path: Path) -> None:
    lock = "# python {}.{}\nhumanize==4.9.0\n".format(*sys.version_info[:2])
    broken = tmp_path / hashlib.sha256(lock.encode()).hexdigest()[:16]
    (broken / "leftover").mkdir(parents=True)
    environment = ensure_locked_environment(lock, tmp_path)
    assert environment.path == broken / "site" and (environment.path / "humanize").is_dir()
    assert not (broken / "leftover").exists() and [p.name for p in tmp_path.iterdir()] == [broken.name]
