"""Flows: the YAML flows of a workspace, every save of one a revision.

A flow's name, namespace, description and labels are read from its YAML. (namespace, name) is
unique in a workspace and makes the flow's path `f/<namespace>/<name>`, the name routes,
schedules and `wmill.run_flow_async` use. Saving new YAML adds a revision (1, 2, ...) with its
author and time, and the flow points at it; saving the YAML it has already changes nothing.
Restoring an old revision saves its YAML again as a new revision: the history only grows.
Deleting a flow deletes its revisions; its runs keep their own history.

A revision's hash (sha256 of its YAML, 32 hex digits) is what a run of the flow keeps
(`job.script_hash`) and loads its YAML by (`version_by_hash`): a run goes on with the YAML it
started with whatever is saved meanwhile.

Only a valid flow is saved (`app.flows.validate` with the plugin catalogue, plus what storage
needs of its name and namespace); an invalid one is refused as `Invalid` (422) with details
`{"errors": [{path, message, line, column}]}`. Saves of an existing flow hold one lock
(`Database.exclusive`, across processes on PostgreSQL) from reading its revision to writing
the next, so two saves never claim the same number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Protocol

import msgspec

from app.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound, TooLarge
from app.flows.model import Flow, FlowError, FlowInvalid, load
from app.flows.validate import validate
from app.ids import random_uuid
from app.services import audit
from app.services.actor import Actor, at_least, now_ms
from app.store.base import Database, Row, Statement, UniqueViolation

MAX_YAML_BYTES = 512 * 1024
MAX_PAGE = 200
# A name or a namespace is one segment of the flow's path: no '/', nothing to escape in a URL.
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SAVING = "flows.save"  # the lock held from reading a flow's revision to writing the next
_COLUMNS = (
    "id, workspace_id, namespace, name, description, labels, yaml, revision, hash, "
    "created_by, created_at, updated_by, updated_at"
)


class Catalog(Protocol):
    """The plugin catalogue validation reads (`app.plugins.registry.Registry`)."""

    def get(self, type_id: str) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True)
class FlowRecord:
    """A stored flow at its latest revision."""

    id: str
    workspace: str
    namespace: str
    name: str
    description: str
    labels: dict[str, str]
    yaml: str
    revision: int
    hash: str
    created_by: str
    created_at: int
    updated_by: str
    updated_at: int

    @property
    def path(self) -> str:
        """`f/<namespace>/<name>`: how runnables name the flow."""
        return f"f/{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Revision:
    """One save of a flow's YAML."""

    revision: int
    yaml: str
    hash: str
    created_by: str
    created_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class FlowVersion:
    """The YAML a run of a flow loads by its hash."""

    flow_id: str
    revision: int
    yaml: str
    hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class FlowPage:
    items: list[FlowRecord]
    next_cursor: str | None  # give it back as `cursor` for the next page; None: this was the last


@dataclasses.dataclass(frozen=True, slots=True)
class FlowExport:
    """A flow as exported: its YAML and its whole history, newest revision first."""

    flow: FlowRecord
    revisions: list[Revision]


def yaml_hash(text: str) -> str:
    """The hash of a revision: sha256 of its YAML, first 32 hex digits."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def error_details(errors: list[FlowError]) -> dict[str, Any]:
    """The `details` of a 422 for an invalid flow."""
    return {"errors": [{"path": e.path, "message": e.message, "line": e.line, "column": e.column} for e in errors]}


class Flows:
    """The flows of every workspace: saved, read, listed, versioned. `catalog` is the plugin
    catalogue YAML is validated against."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

    # -- checking ---------------------------------------------------------------------------------

    def validate(self, text: str) -> list[FlowError]:
        """Every error of `text` as a flow, [] when it is valid: YAML syntax (with line and
        column), structure, plugins, properties, references and templates, and a name and a
        namespace that fit a path. TooLarge past MAX_YAML_BYTES."""
        return self._parse(text)[1]

    def _parse(self, text: str) -> tuple[Flow | None, list[FlowError]]:
        if len(text) > MAX_YAML_BYTES or len(text.encode()) > MAX_YAML_BYTES:
            raise TooLarge(f"a flow's YAML is limited to {MAX_YAML_BYTES} bytes")
        try:
            errors = list(validate(text, self.catalog))
            flow = load(text)
        except FlowInvalid as invalid:
            return None, errors or list(invalid.errors)
        except RecursionError:  # PyYAML composes nested collections recursively: a few hundred levels
            return None, [FlowError("", "the YAML is nested too deeply")]
        if errors:
            return None, errors
        for field, value in (("namespace", flow.namespace), ("name", flow.name)):
            if not SEGMENT.match(value):
                errors.append(FlowError(field, f"{field} is 1 to 200 letters, digits, '.', '_' or '-', starting with "
                                               "a letter or a digit (it is part of the flow's path f/<namespace>/<name>)"))
        return flow, errors

    def _checked(self, text: str, name: str | None = None, namespace: str | None = None) -> Flow:
        """The flow `text` defines; Invalid (422) naming every error, BadRequest when `name` or
        `namespace` are given and are not the YAML's."""
        flow, errors = self._parse(text)
        if errors or flow is None:
            first = errors[0] if errors else FlowError("", "the flow is not valid")
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Invalid(f"the flow is not valid: {first.path or 'document'}: {first.message}{more}", error_details(errors))
        for field, given, found in (("name", name, flow.name), ("namespace", namespace, flow.namespace)):
            if given is not None and given != found:
                raise BadRequest(f"{field} {given!r} is not the YAML's {field} ({found!r}): leave it out or make them match")
        return flow

    @staticmethod
    def _may_edit(actor: Actor) -> None:
        if not at_least(actor.role, "editor"):
            raise Forbidden("changing flows needs the editor role")

    # -- changing ---------------------------------------------------------------------------------

    async def create(self, actor: Actor, text: str, name: str | None = None, namespace: str | None = None) -> FlowRecord:
        """A new flow from its YAML, at revision 1 (`name` and `namespace`, when given, must be
        the YAML's). Conflict when the workspace has a flow of that namespace and name."""
        self._may_edit(actor)
        return await self._insert(actor, self._checked(text, name, namespace), text)

    async def update(self, actor: Actor, flow_id: str, text: str, name: str | None = None,
                     namespace: str | None = None) -> FlowRecord:
        """Save new YAML as the flow's next revision, by `actor` now; the YAML it has already
        changes nothing. The YAML may rename the flow: Conflict when the new name is taken."""
        self._may_edit(actor)
        return await self._save(actor, flow_id, self._checked(text, name, namespace), text)

    async def restore(self, actor: Actor, flow_id: str, revision: int) -> FlowRecord:
        """Save the YAML of an old revision again, as a new revision (it is validated again:
        a plugin it uses may be gone). NotFound when there is no such revision."""
        self._may_edit(actor)
        current = await self.get(actor.workspace, flow_id)
        text = await self.db.fetchval(
            "SELECT yaml FROM flow_version WHERE flow_id = $1 AND revision = $2", current.id, revision
        )
        if text is None:
            raise NotFound(f"flow {flow_id} has no revision {revision}")
        return await self._save(actor, flow_id, self._checked(text), text)

    async def delete(self, actor: Actor, flow_id: str) -> None:
        """Delete a flow and its revisions; its runs keep their history."""
        self._may_edit(actor)
        async with self.db.exclusive(_SAVING):
            current = await self.get(actor.workspace, flow_id)
            await self.db.write(
                Statement("DELETE FROM flow WHERE id = $1 AND workspace_id = $2", (current.id, actor.workspace)),
                Statement("DELETE FROM flow_version WHERE flow_id = $1", (current.id,)),
                audit.entry(actor, f"flow:{current.path}"),
            )

    async def import_flow(self, actor: Actor, text: str, name: str | None = None, namespace: str | None = None,
                          overwrite: bool = False) -> FlowRecord:
        """A flow from an export's YAML: a new flow at revision 1, or, when one of that namespace
        and name exists, Conflict unless `overwrite`, which saves the YAML as its next revision.
        The export's history is not replayed: the importer is the author of what is saved."""
        self._may_edit(actor)
        flow = self._checked(text, name, namespace)
        existing = await self._row_by_name(actor.workspace, flow.namespace, flow.name)
        if existing is None:
            return await self._insert(actor, flow, text)
        if not overwrite:
            raise Conflict(f"a flow f/{flow.namespace}/{flow.name} exists already (import with overwrite=true to "
                           "save this as its next revision)", {"id": existing["id"]})
        return await self._save(actor, existing["id"], flow, text)

    async def _insert(self, actor: Actor, flow: Flow, text: str) -> FlowRecord:
        author, now = actor.username or "", now_ms()
        record = FlowRecord(
            id=random_uuid(), workspace=actor.workspace, namespace=flow.namespace, name=flow.name,
            description=flow.description, labels=dict(flow.labels), yaml=text, revision=1, hash=yaml_hash(text),
            created_by=author, created_at=now, updated_by=author, updated_at=now,
        )
        try:
            await self.db.write(
                Statement(
                    f"INSERT INTO flow ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $11)",
                    (record.id, record.workspace, record.namespace, record.name, record.description,
                     _labels_text(record.labels), text, 1, record.hash, record.created_by, record.created_at),
                ),
                _version(record),
                audit.entry(actor, f"flow:{record.path}@1"),
            )
        except UniqueViolation:
            raise Conflict(f"a flow {record.path} exists already") from None
        return record

    async def _save(self, actor: Actor, flow_id: str, flow: Flow, text: str) -> FlowRecord:
        """Make `text` the flow's next revision, unless it is its YAML already."""
        async with self.db.exclusive(_SAVING):
            current = await self.get(actor.workspace, flow_id)
            if current.yaml == text:
                await self.db.write(audit.entry(actor, f"flow:{current.path}@{current.revision}", "unchanged"))
                return current
            record = dataclasses.replace(
                current, namespace=flow.namespace, name=flow.name, description=flow.description,
                labels=dict(flow.labels), yaml=text, revision=current.revision + 1, hash=yaml_hash(text),
                updated_by=actor.username or "", updated_at=now_ms(),
            )
            try:
                await self.db.write(
                    Statement(
                        "UPDATE flow SET namespace = $1, name = $2, description = $3, labels = $4, yaml = $5, "
                        "revision = $6, hash = $7, updated_by = $8, updated_at = $9 WHERE id = $10",
                        (record.namespace, record.name, record.description, _labels_text(record.labels), text,
                         record.revision, record.hash, record.updated_by, record.updated_at, record.id),
                    ),
                    _version(record),
                    audit.entry(actor, f"flow:{record.path}@{record.revision}"),
                )
            except UniqueViolation:
                raise Conflict(f"a flow {record.path} exists already: this YAML would rename {current.path} to it") from None
            return record

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, workspace: str, flow_id: str) -> FlowRecord:
        """A flow at its latest revision; NotFound when the workspace has none with this id."""
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM flow WHERE id = $1 AND workspace_id = $2", flow_id, workspace)
        if row is None:
            raise NotFound(f"no flow {flow_id}")
        return _record(row)

    async def by_path(self, workspace: str, path: str) -> FlowRecord:
        """The flow at `f/<namespace>/<name>`; NotFound for any other path or when there is none."""
        prefix, _, rest = path.partition("/")
        namespace, _, name = rest.partition("/")
        row = None
        if prefix == "f" and SEGMENT.match(namespace) and SEGMENT.match(name):
            row = await self._row_by_name(workspace, namespace, name)
        if row is None:
            raise NotFound(f"no flow at {path[:300]}")
        return _record(row)

    async def version_by_hash(self, workspace: str, digest: str) -> FlowVersion:
        """The revision of the workspace's flows with this hash (the one a flow is at now first,
        then the latest); NotFound when there is none (its flow was deleted)."""
        row = await self.db.fetchrow(
            "SELECT v.flow_id, v.revision, v.yaml, v.hash FROM flow_version v JOIN flow f ON f.id = v.flow_id "
            "WHERE v.hash = $1 AND f.workspace_id = $2 "
            "ORDER BY CASE WHEN f.hash = v.hash THEN 0 ELSE 1 END, v.revision DESC LIMIT 1",
            digest, workspace,
        )
        if row is None:
            raise NotFound(f"no flow revision {digest[:64]}")
        return FlowVersion(row["flow_id"], row["revision"], row["yaml"], row["hash"])

    async def revisions(self, workspace: str, flow_id: str) -> list[Revision]:
        """Every revision of a flow, newest first."""
        current = await self.get(workspace, flow_id)
        rows = await self.db.fetch(
            "SELECT revision, yaml, hash, created_by, created_at FROM flow_version WHERE flow_id = $1 ORDER BY revision DESC",
            current.id,
        )
        return [Revision(r["revision"], r["yaml"], r["hash"], r["created_by"], r["created_at"]) for r in rows]

    async def export(self, workspace: str, flow_id: str) -> FlowExport:
        """A flow with its whole history, for `import_flow` here or elsewhere."""
        return FlowExport(await self.get(workspace, flow_id), await self.revisions(workspace, flow_id))

    async def list(self, workspace: str, namespace: str | None = None, q: str | None = None, label: str | None = None,
                   cursor: str | None = None, limit: int = 50) -> FlowPage:
        """The workspace's flows by namespace then name. `q`: the name contains it (any case);
        `label`: `key=value`, a label the flow has. The cursor is `<namespace>/<name>` of the
        last flow of the page before."""
        clauses, args = ["workspace_id = $1"], [workspace]
        if namespace is not None:
            args.append(namespace)
            clauses.append(f"namespace = ${len(args)}")
        if q:
            args.append(f"%{_like(q.lower())}%")
            clauses.append(f"lower(name) LIKE ${len(args)} ESCAPE '\\'")
        wanted = None
        if label is not None:
            key, equals, value = label.partition("=")
            if not equals or not key:
                raise BadRequest("label is key=value")
            wanted = (key, value)
            # A narrowing of the rows read; each is checked exactly below.
            args.append(f"%{_like(_labels_text({key: value})[1:-1])}%")
            clauses.append(f"labels LIKE ${len(args)} ESCAPE '\\'")
        after = _cursor(cursor) if cursor else None
        limit = max(1, min(limit, MAX_PAGE))
        items: list[FlowRecord] = []
        while len(items) <= limit:
            page_args, page_clauses = list(args), list(clauses)
            if after is not None:
                page_args += after
                page_clauses.append(f"(namespace, name) > (${len(page_args) - 1}, ${len(page_args)})")
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM flow WHERE {' AND '.join(page_clauses)} ORDER BY namespace, name LIMIT {limit + 1}",
                *page_args,
            )
            records = [_record(r) for r in rows]
            items += [r for r in records if wanted is None or r.labels.get(wanted[0]) == wanted[1]]
            if len(rows) <= limit:
                break
            after = [records[-1].namespace, records[-1].name]
        next_cursor = f"{items[limit - 1].namespace}/{items[limit - 1].name}" if len(items) > limit else None
        return FlowPage(items[:limit], next_cursor)

    async def _row_by_name(self, workspace: str, namespace: str, name: str) -> Row | None:
        return await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM flow WHERE workspace_id = $1 AND namespace = $2 AND name = $3", workspace, namespace, name
        )


def _record(row: Row) -> FlowRecord:
    return FlowRecord(
        id=row["id"], workspace=row["workspace_id"], namespace=row["namespace"], name=row["name"],
        description=row["description"], labels=msgspec.json.decode(row["labels"]), yaml=row["yaml"],
        revision=row["revision"], hash=row["hash"], created_by=row["created_by"], created_at=row["created_at"],
        updated_by=row["updated_by"], updated_at=row["updated_at"],
    )


def _version(record: FlowRecord) -> Statement:
    """The flow_version row of `record`'s revision."""
    return Statement(
        "INSERT INTO flow_version (hash, flow_id, revision, yaml, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        (record.hash, record.id, record.revision, record.yaml, record.updated_by, record.updated_at),
    )


def _labels_text(labels: dict[str, str]) -> str:
    return msgspec.json.encode(labels, order="sorted").decode()


def _like(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _cursor(cursor: str) -> list[str]:
    namespace, _, name = cursor.partition("/")
    if not (SEGMENT.match(namespace) and SEGMENT.match(name)):
        raise BadRequest("cursor is not one this API gave")
    return [namespace, name]
