"""Settings, read once at start from flags and FLOWMILL_* environment variables.

Nothing else in Flowmill reads the environment: the one `Settings` object made here is
passed down to whatever needs it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from platformdirs import user_data_dir

from app.errors import ConfigError

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    port: int
    home: Path
    database_url: str
    master_key: str | None  # base64 key from the environment; None: the key file in `home`
    auth: bool
    workers: int
    # SQLite durability: FULL fsyncs every group commit, so an answered write survives
    # a power cut as well as a crash; NORMAL survives a crash of the process only.
    sqlite_synchronous: str = "FULL"
    token_ttl_s: int = 12 * 3600
    max_body_bytes: int = 10 * 1024 * 1024
    kv_max_value_bytes: int = 1024 * 1024
    login_attempts_per_minute: int = 10
    job_memory_limit_mb: int | None = 2048  # address-space limit of a script's process
    body_timeout_s: int = 30  # a request's whole body must arrive within this (else 408)
    shutdown_timeout_s: int = 10  # a stop that takes longer is forced (exit code 1)
    log_level: str = "info"  # debug, info, warning, error
    log_json: bool = False  # one JSON object a line instead of text
    access_log: bool = True  # a line for every answered request (at info)
    job_max_file_mb: int | None = 1024  # largest file a run may write (RLIMIT_FSIZE)
    job_max_processes: int | None = 512  # processes and threads of a run at once, where the kernel applies it
    sandbox: bool = True  # runs walled off from the data dir; off only to measure what the wall costs
    # Retention (app/engine/retention.py); 0 turns a rule off.
    retention_days: int = 30  # finished runs, with their log lines, are pruned this long after they finished
    retention_runs_per_script: int = 1000  # of each runnable's finished runs, the newest this many are kept
    audit_retention_days: int = 365  # audit entries are pruned at this age
    retention_interval_s: int = 300  # how often a serving process prunes

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///").removeprefix("sqlite://"))

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def internal_url(self) -> str:
        """How scripts on this machine reach the server (a wildcard bind is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "on", "yes"}:
        return True
    if lowered in {"0", "false", "off", "no"}:
        return False
    raise ConfigError(f"{name} must be on or off, not {value!r}")


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {number}")
    return number


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: object
) -> Settings:
    """Build the settings from `env` (default: the process environment) and flag overrides.

    Flags given on the command line win over the environment; `None` overrides are ignored.
    """
    env = os.environ if env is None else env
    given = {k: v for k, v in overrides.items() if v is not None}
    home = Path(str(given.get("home") or env.get("FLOWMILL_HOME") or user_data_dir("flowmill")))
    host = str(given.get("host") or env.get("FLOWMILL_HOST", "127.0.0.1"))
    port = given.get("port") or _int(env.get("FLOWMILL_PORT", "8080"), "FLOWMILL_PORT", 0, 65535)
    database_url = str(
        given.get("database_url")
        or env.get("FLOWMILL_DATABASE_URL")
        or f"sqlite:///{home / 'flowmill.db'}"
    )
    if not database_url.startswith(("sqlite:", "postgresql://", "postgres://")):
        raise ConfigError("FLOWMILL_DATABASE_URL must start with sqlite:/// or postgresql://")
    auth = _flag(env.get("FLOWMILL_AUTH", "on"), "FLOWMILL_AUTH")
    if not auth and host not in LOOPBACK_HOSTS:
        raise ConfigError(f"FLOWMILL_AUTH=off is refused unless bound to loopback, not {host}")
    synchronous = env.get("FLOWMILL_SQLITE_SYNCHRONOUS", "FULL").upper()
    if synchronous not in {"FULL", "NORMAL"}:
        raise ConfigError("FLOWMILL_SQLITE_SYNCHRONOUS must be FULL or NORMAL")
    cores = os.cpu_count() or 1
    log_level = env.get("FLOWMILL_LOG_LEVEL", "info").strip().lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"FLOWMILL_LOG_LEVEL must be debug, info, warning or error, not {log_level!r}")
    log_format = env.get("FLOWMILL_LOG_FORMAT", "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"FLOWMILL_LOG_FORMAT must be text or json, not {log_format!r}")
    return Settings(
        host=host,
        port=int(port),  # type: ignore[arg-type]
        home=home,
        database_url=database_url,
        master_key=env.get("FLOWMILL_MASTER_KEY") or None,
        auth=auth,
        workers=_int(env.get("FLOWMILL_WORKERS", str(cores)), "FLOWMILL_WORKERS", 1, 512),
        sqlite_synchronous=synchronous,
        token_ttl_s=_int(env.get("FLOWMILL_TOKEN_TTL_S", str(12 * 3600)), "FLOWMILL_TOKEN_TTL_S", 60, 10**8),
        job_memory_limit_mb=_int(env.get("FLOWMILL_JOB_MEMORY_MB", "2048"), "FLOWMILL_JOB_MEMORY_MB", 0, 10**7) or None,
        body_timeout_s=_int(env.get("FLOWMILL_BODY_TIMEOUT_S", "30"), "FLOWMILL_BODY_TIMEOUT_S", 1, 3600),
        shutdown_timeout_s=_int(env.get("FLOWMILL_SHUTDOWN_TIMEOUT_S", "10"), "FLOWMILL_SHUTDOWN_TIMEOUT_S", 1, 3600),
        log_level=log_level,
        log_json=log_format == "json",
        access_log=_flag(env.get("FLOWMILL_ACCESS_LOG", "on"), "FLOWMILL_ACCESS_LOG") and log_level in ("debug", "info"),
        job_max_file_mb=_int(env.get("FLOWMILL_JOB_MAX_FILE_MB", "1024"), "FLOWMILL_JOB_MAX_FILE_MB", 0, 10**8) or None,
        job_max_processes=_int(env.get("FLOWMILL_JOB_MAX_PROCESSES", "512"), "FLOWMILL_JOB_MAX_PROCESSES", 0, 10**6) or None,
        sandbox=_flag(env.get("FLOWMILL_SANDBOX", "on"), "FLOWMILL_SANDBOX"),
        retention_days=_int(env.get("FLOWMILL_RETENTION_DAYS", "30"), "FLOWMILL_RETENTION_DAYS", 0, 100_000),
        retention_runs_per_script=_int(env.get("FLOWMILL_RETENTION_RUNS_PER_SCRIPT", "1000"),
                                       "FLOWMILL_RETENTION_RUNS_PER_SCRIPT", 0, 10**9),
        audit_retention_days=_int(env.get("FLOWMILL_AUDIT_RETENTION_DAYS", "365"), "FLOWMILL_AUDIT_RETENTION_DAYS",
                                  0, 100_000),
        retention_interval_s=_int(env.get("FLOWMILL_RETENTION_INTERVAL_S", "300"), "FLOWMILL_RETENTION_INTERVAL_S",
                                  1, 86_400),
    )


def replace(settings: Settings, **changes: object) -> Settings:
    """A copy of `settings` with some fields changed (tests and the CLI use it)."""
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
