"""The domain services, built once at start over one database."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
from pathlib import Path

from app.config import Settings
from app.engine.forkserver import ForkServer, ForkServerError, WallSettings
from app.engine.masks import Masks
from app.engine.retention import Policy, Retention
from app.errors import StartupError
from app.plugins import Registry, default_registry
from app.security.tokens import JwtCodec, load_signing_key
from app.security.vault import Vault, load_master_key
from app.services.accounts import Accounts
from app.services.audit import AuditLog
from app.services.credentials import Credentials
from app.services.executions import Executions
from app.services.flow_approvals import FlowApprovals
from app.services.flows import Flows
from app.services.instance import InstanceSettings
from app.services.instances import Instances
from app.services.jobs import Jobs
from app.services.kv import KeyValueStore
from app.services.resources import Resources
from app.services.routes import Routes
from app.services.scripts import Scripts
from app.services.static import StaticFiles
from app.services.triggers import Triggers
from app.services.variables import Variables
from app.store.base import Database

CANARY_KEY = "vault.canary"
log = logging.getLogger("flowmill")


@dataclasses.dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    vault: Vault
    accounts: Accounts
    audit: AuditLog
    credentials: Credentials
    kv: KeyValueStore
    scripts: Scripts
    variables: Variables
    resources: Resources
    jobs: Jobs
    forkserver: ForkServer
    lean_forkserver: ForkServer
    routes: Routes
    static: StaticFiles
    triggers: Triggers
    flows: Flows
    executions: Executions
    approvals: FlowApprovals
    instances: Instances
    instance: InstanceSettings
    retention: Retention
    plugins: Registry  # the task types of flows (app.plugins), built-in and installed

    async def start(self) -> None:
        """Start the fork server, recover interrupted runs, start the executor, the schedules
        and retention's passes."""
        self.forkserver.start()
        self.lean_forkserver.start()
        # Not waited for: the fork server logs which walls hold around runs as soon as it serves.
        asyncio.get_running_loop().run_in_executor(None, _wait_ready, self.forkserver)
        await self.jobs.start()
        self.triggers.start()
        self.retention.start()

    async def stop(self) -> None:
        """Stop retention, the schedules, running work (recorded as cancelled) and the fork server."""
        await self.retention.stop()
        await self.triggers.stop()
        await self.jobs.stop()
        await asyncio.gather(asyncio.to_thread(self.forkserver.stop), asyncio.to_thread(self.lean_forkserver.stop))


def wall_settings(settings: Settings) -> WallSettings:
    """How runs are walled off: from the data dir (and a SQLite file kept elsewhere), within the limits."""
    denied = [settings.home]
    if settings.is_sqlite and not settings.sqlite_path.resolve().is_relative_to(settings.home.resolve()):
        denied.append(settings.sqlite_path.parent)
    return WallSettings(
        denied=tuple(denied), enabled=settings.sandbox,
        max_file_bytes=settings.job_max_file_mb * 1024 * 1024 if settings.job_max_file_mb else None,
        max_processes=settings.job_max_processes,
    )


def runtime_dir(settings: Settings) -> Path:
    """Where this process's fork servers keep their sockets: `<home>/run` on SQLite (one server
    per data dir holds it, `app.server.owner`), `<home>/run/<pid>` on PostgreSQL, where several
    processes may share a home; the folders of processes that are gone are removed."""
    base = settings.home / "run"
    if settings.is_sqlite:
        return base
    if base.is_dir():
        for entry in base.iterdir():
            if entry.name.isdigit() and entry.is_dir() and not _alive(int(entry.name)):
                shutil.rmtree(entry, ignore_errors=True)
    return base / str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _wait_ready(forkserver: ForkServer) -> None:
    try:
        forkserver.wait_ready()
    except ForkServerError as error:
        log.warning("%s", error.message)


async def check_master_key(db: Database, vault: Vault) -> None:
    """Refuse to start with a master key that cannot decrypt what is stored."""
    blob = await db.fetchval("SELECT value FROM instance_setting WHERE key = $1", CANARY_KEY)
    if blob is None:
        await db.execute(
            "INSERT INTO instance_setting (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            CANARY_KEY, vault.canary().hex(),
        )
    elif not vault.check_canary(bytes.fromhex(blob)):
        raise StartupError("the master key does not decrypt the stored secrets (wrong FLOWMILL_MASTER_KEY or master.key?)")


async def build_services(settings: Settings, db: Database) -> Services:
    """Load the keys, check them against the database, and make every service."""
    vault = Vault(load_master_key(settings.home, settings.master_key))
    await check_master_key(db, vault)
    jwt = JwtCodec(load_signing_key(settings.home), settings.token_ttl_s)
    accounts = Accounts(db, jwt, settings.login_attempts_per_minute)
    await accounts.ensure_default_workspace()
    scripts = Scripts(db)
    masks = Masks()  # the secrets each run was given (app.engine.masks)
    variables = Variables(db, vault, masks)
    credentials = Credentials(db, vault, masks)
    resources = Resources(db, variables, credentials)
    wall = wall_settings(settings)
    run_dir = runtime_dir(settings)
    forkserver = ForkServer(run_dir, idle_children=min(4, settings.workers), wall=wall)
    lean_forkserver = ForkServer(run_dir, idle_children=min(4, settings.workers), lean=True, wall=wall)
    instance = InstanceSettings(db)
    jobs = Jobs(settings, db, scripts, resources, accounts, jwt, forkserver, lean_forkserver, masks)
    plugins = default_registry()
    flows = Flows(db, plugins)
    kv = KeyValueStore(db, settings.kv_max_value_bytes)
    approvals = FlowApprovals(db, jobs.executor)
    executions = Executions(db, jobs, flows, plugins, vault, kv, variables, credentials, approvals)
    triggers = Triggers(db, vault, jobs)
    triggers.executions = executions
    jobs.executions = executions  # a workflow's `task_flow` starts an execution
    accounts.run_carried = jobs.executor.knows  # a run's token is cached while this process carries the run
    return Services(
        settings=settings,
        db=db,
        vault=vault,
        accounts=accounts,
        audit=AuditLog(db),
        credentials=credentials,
        kv=kv,
        scripts=scripts,
        variables=variables,
        resources=resources,
        jobs=jobs,
        forkserver=forkserver,
        lean_forkserver=lean_forkserver,
        routes=Routes(db, vault, instance),
        static=StaticFiles(db),
        triggers=triggers,
        flows=flows,
        executions=executions,
        approvals=approvals,
        instances=Instances(db, jobs, instance),
        instance=instance,
        retention=Retention(db, retention_policy(settings), settings.retention_interval_s),
        plugins=plugins,
    )


def retention_policy(settings: Settings) -> Policy:
    """What the settings keep of runs and audit entries (app.engine.retention)."""
    return Policy(settings.retention_days, settings.retention_runs_per_script, settings.audit_retention_days)
