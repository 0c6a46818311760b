"""The schema, as Piccolo tables. Migrations in `migrations/` are generated from these.

Types are kept to those that read the same through `sqlite3` and `asyncpg`: text, integers
(timestamps are epoch milliseconds) and bytes. JSON values are stored as text.
"""

from piccolo.columns import BigInt, Bytea, Integer, Serial, Text, Varchar
from piccolo.table import Table


class Workspace(Table, tablename="workspace"):
    id = Varchar(length=64, primary_key=True)
    name = Varchar(length=200)
    created_at = BigInt()


class AppUser(Table, tablename="app_user"):
    username = Varchar(length=64, primary_key=True)
    password_hash = Text()
    is_superadmin = Integer(default=0)
    created_at = BigInt()


class Member(Table, tablename="member"):
    """A user's role in a workspace; unique on (workspace_id, username)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64, index=True)
    username = Varchar(length=64)
    role = Varchar(length=16)


class ApiToken(Table, tablename="api_token"):
    id = Varchar(length=32, primary_key=True)
    secret_hash = Varchar(length=64)
    username = Varchar(length=64, index=True)
    label = Varchar(length=200)
    created_at = BigInt()
    expires_at = BigInt(null=True, default=None)
    revoked_at = BigInt(null=True, default=None)


class Credential(Table, tablename="credential"):
    """A secret; `ciphertext` is nonce + AES-256-GCM output. Unique on (workspace_id, name)."""

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    name = Varchar(length=200)
    description = Text(default="")
    ciphertext = Bytea()
    created_by = Varchar(length=64)
    created_at = BigInt()
    updated_at = BigInt()


class KvEntry(Table, tablename="kv_entry"):
    """A key-value entry; unique on (workspace_id, namespace, key)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    namespace = Varchar(length=200)
    key = Varchar(length=512)
    value = Text()
    updated_by = Varchar(length=64)
    created_at = BigInt()
    updated_at = BigInt()


class AuditEntry(Table, tablename="audit_entry"):
    id = Serial(primary_key=True)
    at = BigInt(index=True)
    workspace_id = Varchar(length=64, null=True, default=None)
    actor = Varchar(length=64, null=True, default=None)
    action = Varchar(length=100)
    target = Varchar(length=600)
    outcome = Varchar(length=16)
    status = Integer()
    request_id = Varchar(length=64)


class InstanceSetting(Table, tablename="instance_setting"):
    key = Varchar(length=100, primary_key=True)
    value = Text()


class ScriptVersion(Table, tablename="script_version"):
    """One immutable save of a script, named by its content hash."""

    hash = Varchar(length=32, primary_key=True)
    workspace_id = Varchar(length=64)
    path = Varchar(length=255)
    parent_hash = Varchar(length=32, null=True, default=None)
    content = Text()
    summary = Text(default="")
    description = Text(default="")
    schema = Text()  # JSON Schema of main's arguments
    settings = Text()  # JSON: timeout, concurrency, cache, priority, retry
    lock = Text(default="")  # pinned requirements
    has_preprocessor = Integer(default=0)
    created_by = Varchar(length=64)
    created_at = BigInt()


class Script(Table, tablename="script"):
    """A script's path and the version it points at; unique on (workspace_id, path)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    path = Varchar(length=255)
    hash = Varchar(length=32)
    created_at = BigInt()
    updated_at = BigInt()


class Job(Table, tablename="job"):
    """A run of a script (later: of a flow or a workflow), whatever started it."""

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    kind = Varchar(length=16)
    path = Varchar(length=255)
    script_hash = Varchar(length=32, null=True, default=None)
    args = Text()
    status = Varchar(length=16)
    result = Text(null=True, default=None)
    error = Text(null=True, default=None)
    trigger_kind = Varchar(length=32)
    trigger_detail = Text(default="")
    request_id = Varchar(length=64, default="")
    parent_job = Varchar(length=36, null=True, default=None)
    root_job = Varchar(length=36, null=True, default=None)
    created_by = Varchar(length=64)
    created_at = BigInt()
    scheduled_for = BigInt()
    started_at = BigInt(null=True, default=None)
    finished_at = BigInt(null=True, default=None)
    priority = Integer(default=0)
    attempt = Integer(default=1)
    cancel_requested = Integer(default=0)
    worker = Varchar(length=64, default="")
    progress = Integer(null=True, default=None)
    cache_key = Varchar(length=64, null=True, default=None)  # script hash + args, when results are cached
    event = Text(null=True, default=None)  # the trigger's event, given to the script's preprocessor
    # 1 when `args` were written by the run's identity (an API caller, a schedule's editor):
    # only then are `$var:`/`$res:`/`$cred:` strings in them references; otherwise they are data.
    resolve_refs = Integer(default=0)
    # The most the run may hold: set when a run whose role was capped started it (see Jobs.run_script).
    role_cap = Varchar(length=16, null=True, default=None)
    # What the executor needs to schedule and carry the run, copied from its runnable when it
    # is queued (app/engine/queue.py): pick-up and recovery read the run alone.
    timeout_ms = BigInt(null=True, default=None)
    max_attempts = Integer(default=1)
    backoff_ms = BigInt(default=1000)
    concurrency_key = Varchar(length=255, null=True, default=None)
    concurrency_limit = Integer(null=True, default=None)
    concurrency_window_ms = BigInt(null=True, default=None)
    cache_ttl_ms = BigInt(null=True, default=None)
    # A WAITING run: when its timer wakes it (epoch ms), and what else it waits for (JSON).
    wake_at = BigInt(null=True, default=None)
    waiting_for = Text(null=True, default=None)
    # 1 once somebody asked the run to pause: a RUNNING one stops at its next step boundary.
    pause_requested = Integer(default=0)


class JobStep(Table, tablename="job_step"):
    """A checkpoint: the JSON result of a named step of a run, stored before the run goes on,
    or what the run was sent (`approval:<name>`, `event:<type>:<n>`); primary key (job_id,
    name); `seq` orders them."""

    job_id = Varchar(length=36)
    name = Varchar(length=255)
    seq = Integer()
    result = Text()
    created_at = BigInt()


class Worker(Table, tablename="worker"):
    """A serving process, and when it last said it was alive (PostgreSQL: others recover the
    runs of a process that stopped saying so)."""

    id = Varchar(length=64, primary_key=True)
    started_at = BigInt()
    heartbeat_at = BigInt()


class JobLog(Table, tablename="job_log"):
    id = Serial(primary_key=True)
    job_id = Varchar(length=36)
    ts = BigInt()
    stream = Varchar(length=8)
    line = Text()


class Variable(Table, tablename="variable"):
    """A plain or secret (encrypted) string at a path; unique on (workspace_id, path)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    path = Varchar(length=255)
    value = Text(default="")  # the clear value of a plain variable
    ciphertext = Bytea(null=True, default=None)  # the value of a secret one
    is_secret = Integer(default=0)
    description = Text(default="")
    updated_by = Varchar(length=64)
    created_at = BigInt()
    updated_at = BigInt()


class Resource(Table, tablename="resource"):
    """Typed JSON settings at a path (a database, an API, a script's state)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    path = Varchar(length=255)
    resource_type = Varchar(length=100)
    value = Text()
    description = Text(default="")
    updated_by = Varchar(length=64)
    created_at = BigInt()
    updated_at = BigInt()


class ResourceType(Table, tablename="resource_type"):
    """A workspace's own resource type; the built-in ones ship with the program."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    name = Varchar(length=100)
    schema = Text()
    description = Text(default="")
    created_at = BigInt()


class Route(Table, tablename="route"):
    """An HTTP route served at /api/r/...; unique on (route_key, method).

    `route_key` is the path with its parameter names blanked (`users/:` for `users/:id`),
    prefixed with the workspace when routes are served under a workspace prefix: the index
    then enforces the uniqueness rule of the mode in force.
    """

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    path = Varchar(length=600)
    route_key = Varchar(length=700)
    method = Varchar(length=8)
    runnable_kind = Varchar(length=16, null=True, default=None)
    runnable_path = Varchar(length=255, null=True, default=None)
    request_type = Varchar(length=16)
    auth = Text()  # JSON of the auth settings without their secrets
    auth_secret = Bytea(null=True, default=None)  # the secrets, encrypted by the vault
    summary = Text(default="")
    description = Text(default="")
    raw_body = Integer(default=0)
    wrap_body = Integer(default=0)
    static_folder = Varchar(length=255, null=True, default=None)
    static_website = Integer(default=0)
    cors = Text(null=True, default=None)  # JSON of the CORS settings, or none
    created_by = Varchar(length=64)
    created_at = BigInt()
    updated_by = Varchar(length=64)
    updated_at = BigInt()


class StaticFile(Table, tablename="static_file"):
    """One file of an uploaded folder served by a static route; unique on (workspace_id, folder, path)."""

    id = Serial(primary_key=True)
    workspace_id = Varchar(length=64)
    folder = Varchar(length=255)
    path = Varchar(length=1024)
    content = Bytea()
    etag = Varchar(length=64)
    updated_at = BigInt()


class Trigger(Table, tablename="run_trigger"):
    """A webhook (`key`, unique) or a schedule (`cron`, fired at `next_fire_at`)."""

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    kind = Varchar(length=16)
    key = Varchar(length=200, null=True, default=None)
    runnable_kind = Varchar(length=16)
    runnable_path = Varchar(length=255)
    secret = Bytea(null=True, default=None)  # a webhook's secret, encrypted by the vault
    cron = Varchar(length=200, null=True, default=None)
    timezone = Varchar(length=64, null=True, default=None)
    args = Text(default="{}")
    enabled = Integer(default=1)
    catch_up = Varchar(length=8, default="all")  # after downtime: all (of the last hour, <= 100), last or none
    summary = Text(default="")
    description = Text(default="")
    next_fire_at = BigInt(null=True, default=None)
    last_fire_at = BigInt(null=True, default=None)
    created_by = Varchar(length=64)
    created_at = BigInt()
    updated_at = BigInt()
    updated_by = Varchar(length=64, default="")  # who the trigger's runs act as: its last editor


class Flow(Table, tablename="flow"):
    """A YAML flow and the revision it is at; unique on (workspace_id, namespace, name). Its
    name, namespace, description and labels are read from its YAML when it is saved."""

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    namespace = Varchar(length=200)
    name = Varchar(length=200)
    description = Text(default="")
    labels = Text(default="{}")  # JSON object of strings
    yaml = Text()
    revision = Integer()  # the latest revision (1, 2, ...)
    hash = Varchar(length=32)  # of `yaml`: the flow_version a run of it loads
    created_by = Varchar(length=64)
    created_at = BigInt()
    updated_by = Varchar(length=64)
    updated_at = BigInt()


class FlowVersion(Table, tablename="flow_version"):
    """One save of a flow's YAML (a revision), with its author and time; primary key
    (flow_id, revision). `hash` (sha256 of the YAML, 32 hex) is what a run of the flow keeps
    in `job.script_hash`: two revisions with the same YAML share it."""

    hash = Varchar(length=32)
    flow_id = Varchar(length=36)
    revision = Integer()
    yaml = Text()
    created_by = Varchar(length=64)
    created_at = BigInt()


class Approval(Table, tablename="approval"):
    """A `flow.approval` task waiting for (or given) a decision. `form` is the form asked (JSON),
    `form_values` what the decider filled in (JSON): not `values`, a reserved word in SQL."""

    id = Varchar(length=36, primary_key=True)
    workspace_id = Varchar(length=64)
    job_id = Varchar(length=36)
    task = Varchar(length=255)
    message = Text(default="")
    form = Text(null=True, default=None)
    role = Varchar(length=16, null=True, default=None)  # the least role that may decide
    status = Varchar(length=16)  # PENDING, APPROVED, REJECTED or TIMED_OUT
    form_values = Text(null=True, default=None)
    decided_by = Varchar(length=64, null=True, default=None)
    decided_at = BigInt(null=True, default=None)
    created_at = BigInt()
    expires_at = BigInt(null=True, default=None)


TABLES = [
    Workspace, AppUser, Member, ApiToken, Credential, KvEntry, AuditEntry, InstanceSetting,
    ScriptVersion, Script, Job, JobLog, Variable, Resource, ResourceType, Route, StaticFile, Trigger,
]
