"""A script's dependencies: its imports resolved to requirements, locked to exact versions,
and installed once into a cache folder named by the hash of the lock, which the script's
process puts first on `sys.path`.

An inline block overrides inference, as in Windmill:

    # requirements:
    # requests==2.32.3
    # humanize>=4

pip does the work, run as a subprocess of the given interpreter: a dry run with a JSON report
to lock, then `--no-deps --target` to install exactly the lock.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("flowmill.deps")

# Import names whose distribution on PyPI is named otherwise. A dotted key wins over a
# shorter one (`snowflake.snowpark` before `snowflake`).
PACKAGE_OF: dict[str, str] = {
    "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "cv2": "opencv-python",
    "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "dotenv": "python-dotenv", "jwt": "pyjwt",
    "psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python", "Crypto": "pycryptodome", "Cryptodome": "pycryptodomex",
    "googleapiclient": "google-api-python-client", "apiclient": "google-api-python-client",
    "attr": "attrs", "magic": "python-magic", "serial": "pyserial", "usb": "pyusb", "zmq": "pyzmq",
    "docx": "python-docx", "pptx": "python-pptx", "Levenshtein": "python-levenshtein",
    "slugify": "python-slugify", "telegram": "python-telegram-bot", "jose": "python-jose",
    "multipart": "python-multipart", "dns": "dnspython", "OpenSSL": "pyopenssl", "fitz": "pymupdf",
    "skimage": "scikit-image", "Bio": "biopython", "github": "pygithub", "gitlab": "python-gitlab",
    "git": "gitpython", "ldap": "python-ldap", "nacl": "pynacl", "kafka": "kafka-python",
    "paho": "paho-mqtt", "nats": "nats-py", "discord": "discord.py", "websocket": "websocket-client",
    "faiss": "faiss-cpu", "snowflake": "snowflake-connector-python",
    "snowflake.snowpark": "snowflake-snowpark-python", "grpc": "grpcio", "bson": "pymongo",
    "gridfs": "pymongo", "socks": "pysocks", "ruamel": "ruamel.yaml", "mpl_toolkits": "matplotlib",
    "pkg_resources": "setuptools", "osgeo": "gdal", "win32api": "pywin32", "win32com": "pywin32",
    "argon2": "argon2-cffi", "fpdf": "fpdf2", "pdfminer": "pdfminer.six", "decouple": "python-decouple",
    "nmap": "python-nmap", "whois": "python-whois", "ffmpeg": "ffmpeg-python", "umap": "umap-learn",
    "atlassian": "atlassian-python-api", "office365": "office365-rest-python-client",
    "opensearchpy": "opensearch-py", "speech_recognition": "speechrecognition",
    "google.oauth2": "google-auth", "google.protobuf": "protobuf", "google.rpc": "googleapis-common-protos",
    "google.type": "googleapis-common-protos", "google.cloud.secretmanager": "google-cloud-secret-manager",
    "google.cloud.resourcemanager": "google-cloud-resource-manager", "google.cloud.sql": "cloud-sql-python-connector",
    "google.analytics": "google-analytics-data",
}
# Provided by the process that runs the script, never installed for it: the SDK under both
# its names, Flowmill's own package (an `app` from PyPI would shadow it), and `f`/`u`, the
# roots of Windmill's imports of other workspace scripts (`from f.lib.util import x`).
PROVIDED = {"flowmill", "wmill", "app", "f", "u", "__future__"}
# Namespace packages whose distribution is named by the next one or two parts.
_AZURE_GROUPS = {"storage", "keyvault", "mgmt", "ai", "data", "monitor", "search", "messaging",
                 "communication", "kusto", "cognitiveservices"}
_BLOCK_START = re.compile(r"^#\s*requirements:\s*$", re.IGNORECASE)
_API_VERSION = re.compile(r"_v\d+\w*$")  # google.cloud.pubsub_v1 is google-cloud-pubsub


class InstallError(Exception):
    """pip could not resolve or install; `message` is the useful part of what pip said."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class Environment:
    lock: str  # "" when there is nothing to install
    key: str  # the first 16 hex digits of the lock's sha256; the cache folder's name
    path: Path | None  # the folder to put first on sys.path; None: nothing to install


# -- inference -----------------------------------------------------------------------------------


def infer_requirements(source: str) -> list[str]:
    """The script's requirements: its inline `# requirements:` block, as written, if it has
    one; otherwise its absolute imports mapped to PyPI names, less the standard library and
    what the runtime provides, sorted and without duplicates. A script that does not parse
    has none (saving it is refused anyway)."""
    block = _inline_requirements(source)
    if block is not None:
        return block
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    modules: set[str] = set()
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # relative: the script's own
            modules.add(node.module)
            if node.module.split(".")[0] in ("google", "azure"):  # from google.cloud import storage
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted({package for package in map(_package, modules) if package})


def _inline_requirements(source: str) -> list[str] | None:
    lines = source.splitlines()
    for index, line in enumerate(lines):
        if not _BLOCK_START.match(line.rstrip()):
            continue
        found: list[str] = []
        for entry in lines[index + 1:]:
            if not entry.startswith("#"):
                break
            requirement = entry[1:].split(" #")[0].strip()
            if not requirement:  # an empty comment line ends the block, as in Windmill
                break
            if requirement not in found:
                found.append(requirement)
        return found
    return None


def _package(module: str) -> str | None:
    """The distribution that provides `module`, or None when nothing is to be installed."""
    parts = module.split(".")
    if parts[0] in PROVIDED or parts[0] in sys.stdlib_module_names:
        return None
    for size in range(len(parts), 0, -1):
        known = PACKAGE_OF.get(".".join(parts[:size]))
        if known:
            return known
    if parts[0] == "google":
        if len(parts) >= 2 and parts[1] == "cloud":
            return f"google-cloud-{_dist(parts[2])}" if len(parts) >= 3 else None
        return f"google-{_dist(parts[1])}" if len(parts) >= 2 else None  # google.auth, google.genai
    if parts[0] == "azure":
        if len(parts) >= 2 and parts[1] in _AZURE_GROUPS:
            return f"azure-{parts[1]}-{_dist(parts[2])}" if len(parts) >= 3 else None  # azure.storage.blob
        return f"azure-{_dist(parts[1])}" if len(parts) >= 2 else None  # azure.identity
    return parts[0]


def _dist(part: str) -> str:
    return _API_VERSION.sub("", part).replace("_", "-")


# -- locking -------------------------------------------------------------------------------------

_locks: dict[tuple[str, tuple[str, ...]], str] = {}  # (python, sorted requirements) -> lock
_guards: dict[tuple[str, ...], threading.Lock] = {}
_guards_lock = threading.Lock()


def _guard(*key: str) -> threading.Lock:
    """One lock per key, so that runs starting together resolve or install a set once."""
    with _guards_lock:
        return _guards.setdefault(key, threading.Lock())


def lock_requirements(requirements: list[str], python: str = sys.executable, timeout_s: float = 300) -> str:
    """Exact versions of the whole closure of `requirements`: a `# python X.Y` line, then one
    `name==version` a line, sorted. Remembered for the life of the process, so a set is
    resolved once. Raises InstallError with pip's message when it cannot be resolved."""
    wanted = tuple(sorted({r.strip() for r in requirements if r.strip()}))
    if not wanted:
        return ""
    for requirement in wanted:
        if requirement.startswith("-"):  # it would reach pip as an option
            raise InstallError(f"not a requirement: {requirement!r}")
    key = (python, wanted)
    with _guard("lock", python, *wanted):
        if key not in _locks:
            _locks[key] = _resolve(wanted, python, timeout_s)
        return _locks[key]


def _resolve(requirements: tuple[str, ...], python: str, timeout_s: float) -> str:
    # --ignore-installed: the lock must hold the whole closure, not only what this
    # interpreter lacks, since it is installed with --no-deps into an empty folder.
    out = _pip(python, ["install", "--dry-run", "--quiet", "--ignore-installed", "--report", "-", *requirements],
               timeout_s)
    try:
        report = json.loads(out[out.index("{"):])
        pins = sorted({_pin(item) for item in report["install"]})
    except (ValueError, KeyError, TypeError):
        raise InstallError(f"pip gave no usable report: {out[-500:]!r}") from None
    version = report.get("environment", {}).get("python_version") or "{}.{}".format(*sys.version_info[:2])
    return "\n".join([f"# python {version}", *pins]) + "\n"


def _pin(item: dict[str, Any]) -> str:
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    if not item.get("is_direct"):
        return f"{name}=={item['metadata']['version']}"
    # Asked for by URL (`pkg @ https://...`, `git+...`): the index has no such version.
    info = item["download_info"]
    vcs = info.get("vcs_info")
    if vcs:
        return f"{name} @ {vcs['vcs']}+{info['url']}@{vcs['commit_id']}"
    return f"{name} @ {info['url']}"


# -- installing ----------------------------------------------------------------------------------


def ensure_environment(requirements: list[str], cache_dir: Path, python: str = sys.executable,
                       timeout_s: float = 600) -> Environment:
    """Lock `requirements` and make sure the folder holding exactly that lock exists under
    `cache_dir`; with no requirements, nothing is run. Raises InstallError."""
    if not any(r.strip() for r in requirements):
        return Environment("", "", None)
    lock = lock_requirements(requirements, python, min(timeout_s, 300))
    return ensure_locked_environment(lock, cache_dir, python, timeout_s)


def ensure_locked_environment(lock: str, cache_dir: Path, python: str = sys.executable,
                              timeout_s: float = 600) -> Environment:
    """The folder holding exactly `lock` (a script saved with its lock is not resolved
    again), installed now if it is not there yet; at once when it is. Raises InstallError."""
    lock = "".join(f"{line.strip()}\n" for line in lock.splitlines() if line.strip())
    if not any(not line.startswith("#") for line in lock.splitlines()):
        return Environment(lock, "", None)
    key = hashlib.sha256(lock.encode()).hexdigest()[:16]
    target = Path(cache_dir) / key
    site = target / "site"
    if not site.is_dir():
        with _guard("install", str(target)):
            if not site.is_dir():
                _install(lock, target, python, timeout_s)
    return Environment(lock, key, site)


def _install(lock: str, target: Path, python: str, timeout_s: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # a folder at the key without `site` is not an environment: clear it
        _discard(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    started = time.monotonic()
    packages = [line for line in lock.splitlines() if line and not line.startswith("#")]
    log.info("installing %d package(s) into %s: %s", len(packages), target, ", ".join(packages)[:500])
    try:
        lock_file = staging / "requirements.lock"
        lock_file.write_text(lock)
        # The lock pins the whole closure: install it as it is, without resolving again.
        _pip(python, ["install", "--quiet", "--no-deps", "--target", str(staging / "site"), "-r", str(lock_file)],
             timeout_s)
        try:
            # Atomic: the folder at the key is complete or absent, never half-installed.
            os.rename(staging, target)
        except OSError:
            if not (target / "site").is_dir():
                raise
            # Another process installed the same lock first: its folder is as good as ours.
        log.info("installed %d package(s) into %s in %.1f s", len(packages), target, time.monotonic() - started)
    except InstallError as error:
        log.warning("installing into %s failed after %.1f s: %s", target, time.monotonic() - started, error.message[:500])
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _discard(folder: Path) -> None:
    # Renamed first, so the key is free at once even if removing takes a while or fails.
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=folder.parent))
    with contextlib.suppress(OSError):  # gone already, or being replaced by another process
        os.rename(folder, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


# -- running pip ---------------------------------------------------------------------------------


def _pip(python: str, args: list[str], timeout_s: float) -> str:
    """pip's stdout; InstallError with the useful part of its output when it fails."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    # Frozen by PyInstaller, sys.executable is Flowmill itself, which carries pip as `_pip`.
    frozen = getattr(sys, "frozen", False) and python == sys.executable
    try:
        process = subprocess.Popen(
            [python, "_pip", *args] if frozen else [python, "-m", "pip", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,  # its own process group: a timeout also ends the builds it started
        )
    except OSError as error:
        raise InstallError(f"cannot run {python} -m pip: {error.strerror or error}") from None
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(process)
        process.communicate()
        raise InstallError(f"pip did not finish within {timeout_s:g} s") from None
    if process.returncode != 0:
        raise InstallError(_useful(err, out) or f"pip exited with code {process.returncode}")
    return out


def _kill(process: subprocess.Popen[str]) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass


def _useful(stderr: str, stdout: str) -> str:
    """pip's `ERROR:` lines when that is all there is to say; the tail of its output when a
    build failed (the compiler's or setup.py's words are above pip's summary)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()] or stdout.splitlines()
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors and not any(line.startswith("error:") for line in lines):
        return "\n".join(errors[-20:])
    return "\n".join(lines[-40:])[-4000:]
