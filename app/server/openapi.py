"""The OpenAPI document as the server really answers, completed once from what Litestar generates.

Litestar writes the document from the handlers' signatures; three things it cannot know are
added here, in one place, the first time the document is asked for:

- Every error answer is the envelope `{"error": {"code", "message", "details"}}`
  (`server/errors.py`), one `Error` component, documented on every operation for the statuses
  it may answer: 400, 401, 403, 404 and 503 everywhere; 408, 409, 413 and 422 where a request
  changes something; more where a handler names them in `opt["errors"]`. Litestar's own
  `{status_code, detail, extra}` schema, which nothing here answers, is dropped.
- `Any` in a wire type (a run's result, its arguments, a resource's value) means any JSON
  value: the `JsonValue` component, named, rather than an anonymous `{}`.
- A body a handler reads itself (a run's arguments, an archive) is described by its
  `opt["body"]` (`api/documented.py`).
- A response a handler declares itself (`responses={...: ResponseSpec(...)}`: server-sent
  events, Windmill's own error shape) is kept as declared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.routes import HTTPRoute
from litestar.serialization import encode_json

from app.api import documented

ERROR = "Error"
JSON_VALUE = "JsonValue"
_REF = "#/components/schemas/"
assert documented.JSON_VALUE == _REF + JSON_VALUE

SCHEMAS: dict[str, dict[str, Any]] = {
    JSON_VALUE: {
        "description": "Any JSON value: an object, an array, a string, a number, a boolean or null.",
    },
    ERROR: {
        "type": "object",
        "description": "Every error answer of the server.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "description": "what went wrong, for programs: not_found, run_failed, ..."},
                    "message": {"type": "string", "description": "what went wrong, for people"},
                    "details": {"$ref": _REF + JSON_VALUE, "description": "more about it (the field, the run, ...), or null"},
                },
            }
        },
    },
}

ERROR_STATUSES = {
    400: "The request is malformed, or a parameter or field is wrong (the message names it).",
    401: "No token, or one that is invalid or expired.",
    403: "The caller's role does not allow this.",
    404: "No such item, or no such workspace.",
    408: "The request's body did not arrive in time.",
    409: "It conflicts with what exists (a name taken, a run not finished or already finished).",
    413: "The request's body is too large.",
    422: "Well-formed but unacceptable; for a run: it ended FAILED, TIMED_OUT or CANCELLED "
         "(code run_failed, run_timed_out or run_cancelled, details {jobId, status, error}).",
    429: "Too many attempts: try again after Retry-After seconds.",
    503: "The database cannot take the request now: try again later.",
}
_EVERYWHERE = (400, 401, 403, 404, 503)
_CHANGES = {"POST": (408, 409, 413, 422), "PUT": (408, 409, 413, 422), "PATCH": (408, 409, 413, 422), "DELETE": (409,)}

# Where a schema nests other schemas (values that are schemas, lists of schemas, maps of them).
_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
_MANY = ("oneOf", "anyOf", "allOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs")
_TYPED = {"type", "$ref", "const", "enum", *_ONE, *_MANY, *_MAP}


def complete(app: Litestar, generated: dict[str, Any]) -> dict[str, Any]:
    """The document Litestar generated for `app`, completed as the module says (a new dict)."""
    document = {**generated, "paths": {}}
    components = dict(generated.get("components") or {})
    schemas = {name: _named(schema) for name, schema in (components.get("schemas") or {}).items()}
    components["schemas"] = {**schemas, **documented.SCHEMAS, **SCHEMAS}
    document["components"] = components
    handlers = dict(_handlers(app))
    for path, item in generated.get("paths", {}).items():
        document["paths"][path] = {
            method: _operation(operation, handlers.get((path, method.upper()))) if isinstance(operation, dict) else operation
            for method, operation in item.items()
        }
    return document


def _handlers(app: Litestar) -> Iterator[tuple[tuple[str, str], HTTPRouteHandler]]:
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                yield (route.path_format or "/", method), handler


def _operation(operation: dict[str, Any], handler: HTTPRouteHandler | None) -> dict[str, Any]:
    operation = dict(operation)
    read_by_handler = handler.opt.get("body") if handler is not None else None
    if read_by_handler and "requestBody" not in operation:
        operation["requestBody"] = {
            "required": False, "content": {media: {"schema": schema} for media, schema in read_by_handler.items()}
        }
    if "requestBody" in operation:
        body = dict(operation["requestBody"])
        body["content"] = {media: _media(m) for media, m in body.get("content", {}).items()}
        operation["requestBody"] = body
    for parameter in operation.get("parameters") or []:
        if "schema" in parameter:
            parameter["schema"] = _named(parameter["schema"])
    declared = {str(status) for status in (handler.responses or {})} if handler is not None else set()
    responses = {}
    for status, response in (operation.get("responses") or {}).items():
        if status[:1] in "45" and status not in declared:
            continue  # Litestar's own error schema: replaced below
        response = dict(response)
        if "content" in response:
            response["content"] = {media: _media(m) for media, m in response["content"].items()}
        responses[status] = response
    for status in _error_statuses(handler):
        if str(status) not in responses:
            responses[str(status)] = {
                "description": ERROR_STATUSES[status],
                "content": {"application/json": {"schema": {"$ref": _REF + ERROR}}},
            }
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _error_statuses(handler: HTTPRouteHandler | None) -> list[int]:
    if handler is None:
        return list(_EVERYWHERE)
    statuses = set(_EVERYWHERE)
    for method in handler.http_methods:
        statuses.update(_CHANGES.get(method, ()))
    statuses.update(handler.opt.get("errors", ()))
    return sorted(statuses)


def _media(media: dict[str, Any]) -> dict[str, Any]:
    return {**media, "schema": _named(media["schema"])} if "schema" in media else media


def _named(schema: Any) -> Any:
    """`schema` with every schema in it that says nothing of its values (`Any`) made the
    named `JsonValue`; its other keys (a description, a default) kept."""
    if not isinstance(schema, dict):
        return schema
    if not _TYPED & schema.keys():
        return {"$ref": _REF + JSON_VALUE, **schema}
    out = dict(schema)
    for key in _ONE:
        if isinstance(out.get(key), dict):
            out[key] = _named(out[key])
    for key in _MANY:
        if isinstance(out.get(key), list):
            out[key] = [_named(s) for s in out[key]]
    for key in _MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: _named(s) for name, s in out[key].items()}
    return out


class _Completed:
    """A render plugin that renders the completed document: built and encoded once."""

    @staticmethod
    def render_json(request: Request, openapi_schema: dict[str, Any]) -> bytes:
        state = request.app.state
        rendered = state.get("openapi_json")
        if rendered is None:
            rendered = state["openapi_json"] = encode_json(complete(request.app, openapi_schema))
        return rendered


class OpenAPIJson(_Completed, JsonRenderPlugin):
    """`openapi.json`, completed."""


class SwaggerUI(_Completed, SwaggerRenderPlugin):
    """The API explorer, over the completed document."""
