"""A script's dependencies: its imports resolved to requirements, pinned, and installed once
into a cache folder named by the hash of the pins, which the script's process puts first on
`sys.path`.

An inline block overrides inference, as in Windmill:

    # requirements:
    # requests==2.32.3
    # humanize>=4
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Import names whose package on PyPI is named otherwise.
PACKAGE_OF = {
    "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "cv2": "opencv-python",
    "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "dotenv": "python-dotenv", "jwt": "pyjwt",
    "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "Crypto": "pycryptodome",
    "googleapiclient": "google-api-python-client", "attr": "attrs", "magic": "python-magic",
    "serial": "pyserial", "usb": "pyusb", "zmq": "pyzmq", "docx": "python-docx", "pptx": "python-pptx",
    "Levenshtein": "python-levenshtein", "slugify": "python-slugify", "telegram": "python-telegram-bot",
    "jose": "python-jose", "multipart": "python-multipart", "dns": "dnspython", "OpenSSL": "pyopenssl",
    "fitz": "pymupdf", "skimage": "scikit-image", "Bio": "biopython", "github": "pygithub",
    "gitlab": "python-gitlab", "ldap": "python-ldap", "nacl": "pynacl", "kafka": "kafka-python",
    "paho": "paho-mqtt", "pymysql": "pymysql", "redis": "redis", "discord": "discord.py",
    "websocket": "websocket-client", "lxml": "lxml", "markdown": "markdown", "toml": "toml",
    "faiss": "faiss-cpu", "tensorflow": "tensorflow", "torch": "torch", "xdist": "pytest-xdist",
    "snowflake": "snowflake-connector-python", "azure": "azure", "boto3": "boto3",
}
# Provided by Flowmill's own environment: never installed per script.
PROVIDED = {"flowmill", "wmill", "__future__", "app"}
_BLOCK = re.compile(r"^#\s*requirements:\s*$", re.IGNORECASE)


class InstallError(Exception):
    """pip could not resolve or install; `message` is what pip said."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class Environment:
    lock: str
    key: str
    path: Path | None  # the folder to put first on sys.path; None: nothing to install


def _inline_block(source: str) -> list[str] | None:
    lines = source.splitlines()
    for index, line in enumerate(lines):
        if _BLOCK.match(line.strip()):
            found = []
            for entry in lines[index + 1:]:
                text = entry.strip()
                if not text.startswith("#"):
                    break
                requirement = text.lstrip("#").strip()
                if requirement:
                    found.append(requirement)
            return found
    return None


def _package(module: str) -> str | None:
    top = module.split(".")[0]
    if top in PROVIDED or top in sys.stdlib_module_names:
        return None
    if top == "google":  # a namespace: google.cloud.storage -> google-cloud-storage
        parts = module.split(".")
        return "-".join(parts[:3]) if len(parts) >= 3 and parts[1] == "cloud" else None
    return PACKAGE_OF.get(top, top)


def infer_requirements(source: str) -> list[str]:
    """The script's requirements: its inline block if it has one, else its imports."""
    block = _inline_block(source)
    if block is not None:
        return block
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            if node.module == "google.cloud":  # from google.cloud import storage
                modules.update(f"google.cloud.{alias.name}" for alias in node.names)
    return sorted({p for p in map(_package, modules) if p})


def _pip(python: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise InstallError(f"pip did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        useful = [line for line in done.stderr.splitlines() if line.startswith("ERROR") or "error" in line.lower()]
        raise InstallError("\n".join(useful[-10:]) or done.stderr[-2000:] or done.stdout[-2000:])
    return done


@functools.lru_cache(maxsize=256)
def _lock(requirements: tuple[str, ...], python: str, timeout_s: float) -> str:
    done = _pip(python, "install", "--dry-run", "--quiet", "--ignore-installed", "--report", "-", *requirements, timeout_s=timeout_s)
    report = json.loads(done.stdout)
    pins = sorted(f"{item['metadata']['name'].lower()}=={item['metadata']['version']}" for item in report["install"])
    version = ".".join(map(str, sys.version_info[:2]))
    return "\n".join([f"# python {version}", *pins]) + "\n"


def lock_requirements(requirements: list[str], python: str = sys.executable, timeout_s: float = 300) -> str:
    """Exact versions of the whole closure of `requirements`, one `name==version` a line."""
    return _lock(tuple(sorted(requirements)), python, timeout_s)


def ensure_locked_environment(lock: str, cache_dir: Path, python: str = sys.executable, timeout_s: float = 600) -> Environment:
    """The folder holding exactly `lock`, installed now if it is not there yet."""
    pins = [line for line in lock.splitlines() if line.strip() and not line.startswith("#")]
    if not pins:
        return Environment(lock, "", None)
    key = hashlib.sha256(lock.encode()).hexdigest()[:16]
    target = cache_dir / key
    if target.is_dir():
        return Environment(lock, key, target / "site")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        lock_file = staging / "requirements.lock"
        lock_file.write_text(lock)
        # The lock pins the whole closure: install it as it is, without resolving again.
        _pip(python, "install", "--quiet", "--no-deps", "--target", str(staging / "site"), "-r", str(lock_file), timeout_s=timeout_s)
        try:
            os.rename(staging, target)  # atomic: a half-finished install is never seen
        except OSError:
            if not target.is_dir():  # not another install of the same lock that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return Environment(lock, key, target / "site")


def ensure_environment(requirements: list[str], cache_dir: Path, python: str = sys.executable, timeout_s: float = 600) -> Environment:
    """Lock `requirements` and make sure their folder exists; nothing to do for none."""
    if not requirements:
        return Environment("", "", None)
    return ensure_locked_environment(lock_requirements(requirements, python, timeout_s), cache_dir, python, timeout_s)
