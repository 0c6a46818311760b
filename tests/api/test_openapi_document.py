"""The server's own OpenAPI document (`/api/v1/openapi.json`): valid OpenAPI 3.1, every body
typed (no anonymous `object`), every operation documenting the error envelope it answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer

METHODS = ("get", "put", "post", "delete", "patch")
ANY_JSON = "#/components/schemas/JsonValue"
ERROR = "#/components/schemas/Error"
PRIMITIVES = {"string", "integer", "number", "boolean", "null"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def untyped(document: dict[str, Any], schema: Any, where: str, seen: set[str] | None = None) -> list[str]:
    """Where `schema` (and every schema in it, `$ref`s followed) says nothing of its values: it
    must have properties, additionalProperties with a type, items, a primitive type, a const
    or enum, alternatives that are all typed, or be the named any-JSON component."""
    seen = set() if seen is None else seen
    if not isinstance(schema, dict):
        return [f"{where}: not a schema"]
    ref = schema.get("$ref")
    if ref == ANY_JSON:
        return []
    if ref is not None:
        if ref in seen:
            return []
        seen.add(ref)
        return untyped(document, resolve(document, ref), ref, seen)
    found: list[str] = []
    alternatives = [s for key in ("oneOf", "anyOf", "allOf") for s in schema.get(key, [])]
    for i, alternative in enumerate(alternatives):
        found += untyped(document, alternative, f"{where}/alt{i}", seen)
    kinds = schema.get("type")
    kinds = set(kinds if isinstance(kinds, list) else [kinds] if kinds else [])
    if not kinds and not alternatives and "const" not in schema and "enum" not in schema:
        return [f"{where}: no type"]
    if "array" in kinds:
        if "items" not in schema:
            found.append(f"{where}: an array of anything")
        else:
            found += untyped(document, schema["items"], f"{where}/items", seen)
    if "object" in kinds:
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        if not properties and not isinstance(extra, dict):
            found.append(f"{where}: an object with no properties")
        for name, prop in (properties or {}).items():
            found += untyped(document, prop, f"{where}.{name}", seen)
        if isinstance(extra, dict):
            if not extra:
                found.append(f"{where}: additionalProperties of any type")
            else:
                found += untyped(document, extra, f"{where}/additionalProperties", seen)
    return found


def anonymous_object(schema: dict[str, Any]) -> bool:
    """A body (or the items of a list body) that is an inline object: a body is a named
    component, a list of them, a primitive or the any-JSON component."""
    if schema.get("type") == "array":
        schema = schema.get("items", {})
    return "$ref" not in schema and "object" in (schema.get("type") or [])


@pytest.fixture(scope="module")
def document(server: FlowmillServer) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/v1/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def test_the_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_request_and_response_body_is_typed(document: dict[str, Any]) -> None:
    problems = []
    for method, path, op in operations(document):
        bodies = [("request", op["requestBody"]["content"])] if "requestBody" in op else []
        bodies += [(status, r.get("content") or {}) for status, r in op["responses"].items()]
        for label, content in bodies:
            for media, described in content.items():
                where = f"{method} {path} {label} {media}"
                schema = described.get("schema")
                if schema is None:
                    problems.append(f"{where}: no schema")
                    continue
                problems += untyped(document, schema, where)
                if anonymous_object(schema):
                    problems.append(f"{where}: an anonymous object")
        for parameter in op.get("parameters", []):
            problems += untyped(document, parameter["schema"], f"{method} {path} parameter {parameter['name']}")
    assert problems == []


def test_every_operation_documents_the_error_envelope(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    envelope = schemas["Error"]
    assert envelope["required"] == ["error"]
    assert set(envelope["properties"]["error"]["required"]) == {"code", "message", "details"}
    assert ANY_JSON.rsplit("/", 1)[1] in schemas
    missing, litestar = [], []
    for method, path, op in operations(document):
        for status in ("400", "401", "403", "404"):
            schema = (op["responses"].get(status, {}).get("content") or {}).get("application/json", {}).get("schema")
            if schema != {"$ref": ERROR}:
                missing.append(f"{method} {path} {status}")
        for status, response in op["responses"].items():
            for described in (response.get("content") or {}).values():
                if "status_code" in str(described):
                    litestar.append(f"{method} {path} {status}")
    assert missing == [] and litestar == []


def test_runs_document_their_failure_and_their_media_types(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for path in ("/api/v1/jobs/run_wait_result/p/{path}", "/api/v1/w/{workspace}/jobs/run_wait_result/p/{path}"):
        responses = paths[path]["post"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": ANY_JSON}
        assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": ERROR}
        assert "run_failed" in responses["422"]["description"]
    assert paths["/api/v1/jobs/{job_id}/result"]["get"]["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": ERROR}
    for path, method in (("/api/v1/jobs/run_and_stream/p/{path}", "post"), ("/api/v1/jobs/{job_id}/logs/stream", "get")):
        ok = paths[path][method]["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"]
        assert "`end`" in ok["description"] and "`result`" in ok["description"]
        event = resolve(document, ok["content"]["text/event-stream"]["schema"]["$ref"])  # each event, as schemathesis reads it
        assert set(event["properties"]["event"]["enum"]) == {"stream", "log", "result", "error", "end"}
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert next(iter(metrics.values()))["schema"]["type"] == "string"
    windmill = paths["/api/w/{workspace}/jobs/run_wait_result/p/{path}"]["post"]["responses"]["422"]
    assert windmill["content"]["application/json"]["schema"] != {"$ref": ERROR}  # Windmill's own {"error": {name, message}}


def test_the_route_and_trigger_views_are_named_components(document: dict[str, Any]) -> None:
    paths = document["paths"]
    route = paths["/api/v1/routes/{route_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert route == {"$ref": "#/components/schemas/RouteOut"}
    fields = set(resolve(document, route["$ref"])["properties"])
    assert {"id", "path", "method", "runnable", "requestType", "auth", "rawBody", "wrapBody", "static", "runAs"} <= fields
    trigger = paths["/api/v1/triggers/{trigger_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"kind", "runnable", "hasSecret", "cron", "nextFireAt"} <= set(resolve(document, trigger["$ref"])["properties"])
    settings = paths["/api/v1/settings"]["put"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(resolve(document, settings["$ref"])["properties"]) == {"routeWorkspacePrefix", "allowPrivateUrls", "runnerTick"}
