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
    expires_at = BigInt(null=True)
    revoked_at = BigInt(null=True)


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
    workspace_id = Varchar(length=64, null=True)
    actor = Varchar(length=64, null=True)
    action = Varchar(length=100)
    target = Varchar(length=600)
    outcome = Varchar(length=16)
    status = Integer()
    request_id = Varchar(length=64)


class InstanceSetting(Table, tablename="instance_setting"):
    key = Varchar(length=100, primary_key=True)
    value = Text()


TABLES = [Workspace, AppUser, Member, ApiToken, Credential, KvEntry, AuditEntry, InstanceSetting]
