"""OpenAPI and routes: import a document as a preview of routes, export routes and webhooks as
OpenAPI 3.1. Pure functions over plain dicts (the camelCase wire shape); no HTTP, no database.

Import path rule: a route path is `folder/` + a suffix of at most 255 characters. The suffix is
the slug of the operation's `summary` (else the path item's), followed by one `/:name` segment
per `{name}` segment of the OpenAPI path, so path parameters keep working. Without a usable
summary the suffix is the OpenAPI path itself with `{name}` turned into `:name` (`/users/{id}`
-> `users/:id`; a path with no fixed segment is put under `root/`). A clash, checked like the
database does on the path with parameter names blanked, appends `_2`, `_3`, ... to the last
fixed segment. Paths in `taken` are avoided for every method; within one import two
operations may share a path when their methods differ.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import unicodedata
from typing import Any, Literal
from urllib.parse import quote, unquote

import yaml

from app.errors import BadRequest, Invalid

METHODS = ("get", "post", "put", "patch", "delete")
MAX_SUFFIX = 255
DEFAULT_TITLE = "Flowmill API"
DEFAULT_VERSION = "1.0.0"
_TEMPLATE = re.compile(r"^\{([^{}/]+)\}$")
_COLON_PARAM = re.compile(r"(^|/):([^/]*)")
_HMAC_HEADERS = {"github": "X-Hub-Signature-256", "stripe": "Stripe-Signature", "slack": "X-Slack-Signature"}
_GENERIC_HMAC_HEADER = "X-Signature"
_WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"


# --- import -------------------------------------------------------------------------------


def import_routes(
    spec_text: str, folder: str, taken: set[str] | frozenset[str] = frozenset(), *, workspace: str = "main"
) -> list[dict[str, Any]]:
    """Turn an OpenAPI 3.x (or Swagger 2.0) document into unsaved routes under `folder`.

    Raises `Invalid` (422) when the text is not such a document, or when a `$ref` is external
    or points nowhere; the message names the problem.
    """
    doc = _parse(spec_text)
    _check_refs(doc)
    prefix = folder.strip("/")
    used = {_route_key(path) for path in taken}
    used_by_method: set[tuple[str, str]] = set()
    routes: list[dict[str, Any]] = []
    for api_path, item in doc["paths"].items():
        item = _resolve(doc, item)
        if not isinstance(item, dict):
            raise Invalid(f"paths[{api_path!r}] is not an object")
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            if not isinstance(operation, dict):
                raise Invalid(f"paths[{api_path!r}].{method} is not an object")
            summary = _text(operation.get("summary")) or _text(item.get("summary"))
            segments, cut = _suffix(str(api_path), summary)
            path = _unique_path(prefix, segments, cut, method.upper(), used, used_by_method)
            routes.append({
                "path": path,
                "method": method.upper(),
                "runnable": None,
                "requestType": "sync",
                "auth": _auth(doc, operation.get("security", doc.get("security"))),
                "summary": summary,
                "description": _text(operation.get("description")) or _text(item.get("description")),
                "workspace": workspace,
            })
    return routes


def _parse(text: str) -> dict[str, Any]:
    try:
        try:
            doc = json.loads(text)  # JSON is YAML too, but the JSON parser is much faster
        except ValueError:
            doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise Invalid(f"the document is neither JSON nor YAML: {error}") from None
    except RecursionError:
        raise Invalid("the document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise Invalid("the document is not a mapping")
    version = str(doc.get("openapi", ""))
    if not version.startswith("3.") and str(doc.get("swagger", "")) != "2.0":
        raise Invalid("the document is not OpenAPI 3.x or Swagger 2.0 (no `openapi: 3.x` field)")
    if not isinstance(doc.get("paths"), dict):
        raise Invalid("the document has no `paths` object")
    return doc


def _check_refs(doc: dict[str, Any]) -> None:
    """Reject external and dangling `$ref`s. Visits each container once, so YAML aliases
    (shared or even self-referencing nodes) cannot make the walk explode or loop."""
    seen: set[int] = set()
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith("#"):
                    raise Invalid(f"external $ref is not supported: {ref}", {"ref": ref})
                _pointer(doc, ref)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    """The node an internal `$ref` (a JSON pointer, maybe percent-encoded) points at."""
    node: Any = doc
    pointer = unquote(ref[1:])
    for raw in pointer.split("/")[1:] if pointer else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise Invalid(f"$ref points nowhere: {ref}", {"ref": ref})
    return node


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    for _ in range(32):  # a bound, because refs may chain into a cycle
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            return node
        node = _pointer(doc, node["$ref"])
    raise Invalid("a $ref chain is circular")


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _param(segment: str) -> str | None:
    """`:name` for a whole-segment `{name}` template, else None; the name is made one that a
    route path accepts (an identifier of at most 64 characters)."""
    match = _TEMPLATE.match(segment)
    if not match:
        return None
    name = re.sub(r"\W", "_", match.group(1), flags=re.ASCII)
    return ":" + ("_" + name if name[:1].isdigit() else name)[:64]


def _suffix(api_path: str, summary: str | None) -> tuple[list[str], bool]:
    """The suffix segments, and whether the fixed part may be cut to fit 255 characters
    (only a summary slug is: a path is kept whole, as cutting it would change its meaning)."""
    segments = [s for s in api_path.split("/") if s]
    slug = _slug(summary) if summary else ""
    if slug:
        return [slug, *dict.fromkeys(p for s in segments if (p := _param(s)))], True
    # Route path segments allow fewer characters than URLs, and neither `.` nor `..`.
    converted = [_param(s) or re.sub(r"[^A-Za-z0-9._~-]+", "-", s).strip("-.")[:MAX_SUFFIX] for s in segments]
    converted = [s for s in converted if s]
    if all(s.startswith(":") for s in converted):
        converted.insert(0, "root")  # somewhere to put a `_2` marker, and never an empty path
    return converted, False


def _unique_path(
    prefix: str, segments: list[str], cut: bool, method: str,
    used: set[str], used_by_method: set[tuple[str, str]],
) -> str:
    last = max(i for i, s in enumerate(segments) if not s.startswith(":"))
    rest = len("/".join(segments)) - len(segments[last])
    for n in itertools.count(1):
        marker = f"_{n}" if n > 1 else ""
        trial = list(segments)
        if cut:  # the whole suffix, marker included, stays within 255 characters
            room = max(MAX_SUFFIX - rest - len(marker), 1)
            trial[last] = trial[last][:room].rstrip("-") or "x"
        trial[last] += marker
        path = "/".join([prefix, *trial] if prefix else trial)
        key = _route_key(path)
        if key not in used and (key, method) not in used_by_method:
            used_by_method.add((key, method))
            return path
    raise AssertionError("unreachable: itertools.count never ends")


def _route_key(path: str) -> str:
    """The path as the database compares it: parameter names blanked (`users/:`)."""
    return _COLON_PARAM.sub(r"\1:", path.strip("/"))


def _auth(doc: dict[str, Any], security: Any) -> dict[str, Any]:
    """The first security scheme of the requirement that Flowmill can enforce, else none."""
    schemes = (doc.get("components") or {}).get("securitySchemes") or doc.get("securityDefinitions") or {}
    for requirement in security if isinstance(security, list) else []:
        for name in requirement if isinstance(requirement, dict) else []:
            scheme = _resolve(doc, schemes.get(name))
            if not isinstance(scheme, dict):
                continue
            kind, http = scheme.get("type"), str(scheme.get("scheme", "")).lower()
            if kind == "basic" or (kind == "http" and http == "basic"):
                return {"kind": "basic"}
            if kind == "http" and http == "bearer":
                return {"kind": "jwt"}
            if kind == "apiKey" and scheme.get("in") == "header" and _text(scheme.get("name")):
                return {"kind": "api_key", "header": scheme["name"].strip()}
    return {"kind": "none"}


# --- export -------------------------------------------------------------------------------


def export_openapi(
    routes: list[dict[str, Any]],
    webhooks: list[dict[str, Any]],
    *,
    title: str | None,
    version: str | None,
    description: str | None,
    base_url: str,
    workspace_prefix: bool,
    fmt: Literal["json", "yaml"],
) -> str:
    """Describe routes (served at /api/r/...) and webhook triggers as an OpenAPI 3.1 document,
    rendered as JSON or YAML text."""
    if fmt not in ("json", "yaml"):
        raise BadRequest("format is `json` or `yaml`")
    info: dict[str, Any] = {"title": title or DEFAULT_TITLE, "version": version or DEFAULT_VERSION}
    if description:
        info["description"] = description
    paths: dict[str, dict[str, Any]] = {}
    templates: dict[str, str] = {}  # route key -> its first spelling: OpenAPI forbids two
    schemes: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for route in routes:
        local = str(route["path"]).strip("/")
        if workspace_prefix:
            local = f"{route.get('workspace') or 'main'}/{local}"
        template = templates.setdefault(_route_key(local), _COLON_PARAM.sub(r"\1{\2}", local))
        notes = [route.get("description") or ""]
        security = _security(route.get("auth") or {}, schemes, notes)
        params = [s[1:-1] for s in template.split("/") if _TEMPLATE.match(s)]
        operation = _operation(route, "\n\n".join(filter(None, notes)), params, f"api/r/{template}", ids)
        if security:
            operation["security"] = security
        # setdefault: a duplicate (path, method) keeps the first route rather than hiding it
        paths.setdefault(f"/api/r/{template}", {}).setdefault(str(route["method"]).lower(), operation)
    for hook in webhooks:
        if hook.get("kind", "webhook") != "webhook":
            continue
        key = quote(str(hook["key"]), safe="-._~")
        # The secret travels in a header, which OpenAPI describes as an apiKey scheme.
        auth = {"kind": "api_key", "header": _WEBHOOK_SECRET_HEADER} if hook.get("hasSecret") else {}
        security = _security(auth, schemes, [])
        # A webhook has no request type: firing one queues a run and answers its id.
        route = {"method": "POST", "requestType": "async", "summary": hook.get("summary")}
        operation = _operation(route, hook.get("description") or "", [], f"webhook/{key}", ids)
        if security:
            operation["security"] = security
        paths.setdefault(f"/api/v1/webhook/{key}", {})["post"] = operation
    document: dict[str, Any] = {"openapi": "3.1.0", "info": info, "servers": [{"url": base_url.rstrip("/")}]}
    document["paths"] = paths
    if schemes:
        document["components"] = {"securitySchemes": schemes}
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _operation(
    route: dict[str, Any], description: str, params: list[str], name: str, ids: set[str]
) -> dict[str, Any]:
    method = str(route["method"]).lower()
    base = f"{method}_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    operation_id, n = base, 1
    while operation_id in ids:
        n += 1
        operation_id = f"{base}_{n}"
    ids.add(operation_id)
    operation: dict[str, Any] = {"operationId": operation_id}
    if route.get("summary"):
        operation["summary"] = route["summary"]
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in dict.fromkeys(params)
        ]
    if method in ("post", "put", "patch"):
        operation["requestBody"] = {"content": {"application/json": {"schema": {}}}}
    operation["responses"] = _responses(route.get("requestType") or "sync")
    return operation


def _responses(request_type: str) -> dict[str, Any]:
    if request_type == "async":
        job = {"type": "object", "properties": {"jobId": {"type": "string"}}, "required": ["jobId"]}
        return {"202": {"description": "The run was queued.", "content": {"application/json": {"schema": job}}}}
    if request_type == "sync_sse":
        stream = {"text/event-stream": {"schema": {"type": "string"}}}
        return {"200": {"description": "The run's events as a stream.", "content": stream}}
    return {"200": {"description": "The runnable's result.", "content": {"application/json": {"schema": {}}}}}


def _security(auth: dict[str, Any], schemes: dict[str, dict[str, Any]], notes: list[str]) -> list[dict[str, list[str]]]:
    """Register the scheme an auth kind needs and return the requirement; hmac and custom have
    no OpenAPI scheme, so they are explained in the description instead."""
    kind = auth.get("kind", "none")
    if kind == "jwt":
        schemes["bearerAuth"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        return [{"bearerAuth": []}]
    if kind == "basic":
        schemes["basicAuth"] = {"type": "http", "scheme": "basic"}
        return [{"basicAuth": []}]
    if kind == "api_key":
        header = str(auth.get("header") or "X-API-Key")
        # Header names are case-insensitive: one scheme per header, whatever its spelling.
        for name, scheme in schemes.items():
            if scheme["type"] == "apiKey" and scheme["name"].lower() == header.lower():
                return [{name: []}]
        name = "apiKey_" + re.sub(r"[^A-Za-z0-9._-]", "_", header)
        while name in schemes:
            name += "_"
        schemes[name] = {"type": "apiKey", "in": "header", "name": header}
        return [{name: []}]
    if kind == "hmac":
        # A preset fixes its header; only a generic signature may name its own.
        header = _HMAC_HEADERS.get(str(auth.get("preset"))) or auth.get("header") or _GENERIC_HMAC_HEADER
        notes.append(f"Requests must be signed with HMAC in the `{header}` header.")
    elif kind == "custom":
        notes.append("Requests are authorized by a custom script.")
    return []


def curl_command(base_url: str, body: dict[str, Any]) -> str:
    """A ready-to-paste command that asks this server for an export. The Authorization header
    is double-quoted on purpose so the shell expands `$FLOWMILL_TOKEN`."""
    url = shlex.quote(base_url.rstrip("/") + "/api/v1/routes/openapi/export")
    return (
        f"curl -sS -X POST {url} -H \"Authorization: Bearer $FLOWMILL_TOKEN\""
        f" -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )
