"""OpenAPI import into routes and export of routes and webhooks (app/services/openapi.py)."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

import pytest
import yaml

from app.errors import Invalid
from app.services.openapi import curl_command, export_openapi, import_routes


def spec(paths: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, **extra})


def export(routes: list[dict[str, Any]], webhooks: list[dict[str, Any]] | None = None, **options: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "title": None, "version": None, "description": None,
        "base_url": "https://flow.example.com/", "workspace_prefix": False, "fmt": "json",
    }
    settings.update(options)
    text = export_openapi(routes, webhooks or [], **settings)
    document = json.loads(text) if settings["fmt"] == "json" else yaml.safe_load(text)
    validate_31(document)
    return document


def validate_31(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document, cls=validator.OpenAPIV31SpecValidator)


def route(path: str, method: str = "POST", **fields: Any) -> dict[str, Any]:
    return {
        "path": path, "method": method, "runnable": {"kind": "script", "path": "f/x"},
        "requestType": "sync", "auth": {"kind": "none"}, "summary": None, "description": None,
        "workspace": "main", **fields,
    }


# --- import -------------------------------------------------------------------------------


def test_internal_refs_are_followed() -> None:
    document = spec(
        {
            "/users/{id}": {"$ref": "#/components/pathItems/User"},
            "/teams": {
                "parameters": [{"$ref": "#/components/parameters/Page"}],
                "post": {
                    "summary": "Create team",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Team"}}}},
                    "responses": {"200": {"$ref": "#/components/responses/Ok"}},
                },
            },
        },
        components={
            "schemas": {"Team": {"type": "object", "properties": {"a~b/c": {"type": "string"}}},
                        "Name": {"$ref": "#/components/schemas/Team/properties/a~0b~1c"}},
            "parameters": {"Page": {"name": "page", "in": "query", "schema": {"type": "integer"}}},
            "responses": {"Ok": {"description": "ok"}},
            "pathItems": {"User": {"get": {"summary": "Get user", "parameters": [{"$ref": "#/components/parameters/Page"}]}}},
        },
    )
    routes = import_routes(document, "api")
    assert [(r["method"], r["path"]) for r in routes] == [("GET", "api/get-user/:id"), ("POST", "api/create-team")]
    assert routes[1] == {
        "path": "api/create-team", "method": "POST", "runnable": None, "requestType": "sync",
        "auth": {"kind": "none"}, "summary": "Create team", "description": None, "workspace": "main",
    }


@pytest.mark.parametrize(
    "ref", ["other.yaml#/components/schemas/X", "https://example.com/schemas.json#/X", "./common.json"]
)
def test_an_external_ref_is_a_422_naming_it(ref: str) -> None:
    document = spec({"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": ref}}}}}}})
    with pytest.raises(Invalid) as caught:
        import_routes(document, "api")
    assert caught.value.status == 422
    assert ref in caught.value.message and "external" in caught.value.message


def test_a_dangling_internal_ref_is_a_422_naming_it() -> None:
    document = spec({"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/Missing"}]}}}, components={})
    with pytest.raises(Invalid, match="#/components/parameters/Missing"):
        import_routes(document, "api")


def test_a_300_character_summary_gives_a_255_character_suffix() -> None:
    long = "x" * 300
    wordy = ("Fetch the report " * 20)[:300]
    routes = import_routes(spec({
        "/a": {"get": {"summary": long}},
        "/b": {"get": {"summary": long}},
        "/c": {"get": {"summary": wordy}},
        "/d/{id}": {"get": {"summary": long}},
    }), "api")
    suffixes = [r["path"].removeprefix("api/") for r in routes]
    assert suffixes[0] == "x" * 255
    assert suffixes[1] == "x" * 253 + "_2"  # the marker fits within the limit too
    assert suffixes[2].startswith("fetch-the-report-") and len(suffixes[2]) <= 255 and not suffixes[2].endswith("-")
    assert suffixes[3] == "x" * 251 + "/:id"  # the parameter segment is kept, and the whole suffix fits
    assert routes[0]["summary"] == long


def test_operations_without_summary_get_unique_paths_from_the_openapi_path() -> None:
    routes = import_routes(spec({
        "/users": {"get": {}, "post": {}},
        "/users/{id}": {"get": {}, "delete": {}},
        "/users/{userId}": {"get": {}},  # the same route as /users/{id} once names are blanked
        "/": {"get": {}},
        "/{slug}": {"get": {}},
        "/v1/items:batchGet": {"post": {"summary": "🚀"}},  # a summary with nothing to slug
    }), "api")
    assert [(r["method"], r["path"]) for r in routes] == [
        ("GET", "api/users"), ("POST", "api/users"),
        ("GET", "api/users/:id"), ("DELETE", "api/users/:id"),
        ("GET", "api/users_2/:userId"),
        ("GET", "api/root"), ("GET", "api/root/:slug"),
        ("POST", "api/v1/items-batchGet"),
    ]


def test_equal_summaries_are_numbered() -> None:
    routes = import_routes(spec({f"/p{i}": {"get": {"summary": "List things"}} for i in range(3)}), "/api/")
    assert [r["path"] for r in routes] == ["api/list-things", "api/list-things_2", "api/list-things_3"]


def test_taken_paths_are_avoided_for_every_method() -> None:
    document = spec({"/users": {"post": {}}, "/users/{id}": {"get": {}}, "/x": {"get": {"summary": "Ping"}}})
    routes = import_routes(document, "api", {"api/users", "api/users/:other", "api/ping", "api/ping_2"})
    assert [r["path"] for r in routes] == ["api/users_2", "api/users_2/:id", "api/ping_3"]


def test_path_params_become_colon_segments() -> None:
    routes = import_routes(spec({
        "/orgs/{org}/repos/{repo-name}": {"get": {}, "put": {"summary": "Update repo"}},
        "/files/{name}.json": {"get": {}},  # a partial template is not a parameter of its own
        "/n/{1st}/../.well-known/{" + "p" * 80 + "}": {"get": {}},
    }), "gh")
    assert [r["path"] for r in routes] == [
        "gh/orgs/:org/repos/:repo_name", "gh/update-repo/:org/:repo_name", "gh/files/name-.json",
        "gh/n/:_1st/well-known/:" + "p" * 64,
    ]


def test_path_level_keys_and_other_methods_are_ignored() -> None:
    routes = import_routes(spec({
        "/a": {"summary": "Thing", "description": "About a", "parameters": [], "servers": [],
               "head": {}, "options": {}, "trace": {}, "patch": {"description": "Patch it"}},
    }), "f")
    assert routes == [{
        "path": "f/thing", "method": "PATCH", "runnable": None, "requestType": "sync",
        "auth": {"kind": "none"}, "summary": "Thing", "description": "Patch it", "workspace": "main",
    }]


def test_security_requirements_map_to_route_auth() -> None:
    schemes = {
        "bearer": {"type": "http", "scheme": "Bearer", "bearerFormat": "JWT"},
        "basic": {"type": "http", "scheme": "basic"},
        "key": {"type": "apiKey", "in": "header", "name": "X-Token"},
        "queryKey": {"type": "apiKey", "in": "query", "name": "token"},
        "oauth": {"type": "oauth2", "flows": {}},
        "indirect": {"$ref": "#/components/securitySchemes/basic"},
    }
    routes = import_routes(spec({
        "/global": {"get": {}},
        "/basic": {"get": {"security": [{"basic": []}]}},
        "/key": {"get": {"security": [{"key": []}]}},
        "/query": {"get": {"security": [{"queryKey": []}]}},
        "/oauth-then-key": {"get": {"security": [{"oauth": []}, {"key": []}]}},
        "/open": {"get": {"security": []}},
        "/unknown": {"get": {"security": [{"nope": []}]}},
        "/indirect": {"get": {"security": [{"indirect": []}]}},
    }, security=[{"bearer": []}], components={"securitySchemes": schemes}), "s")
    assert [r["auth"] for r in routes] == [
        {"kind": "jwt"}, {"kind": "basic"}, {"kind": "api_key", "header": "X-Token"}, {"kind": "none"},
        {"kind": "api_key", "header": "X-Token"}, {"kind": "none"}, {"kind": "none"}, {"kind": "basic"},
    ]


def test_swagger_2_is_accepted() -> None:
    document = {
        "swagger": "2.0", "info": {"title": "t", "version": "1"},
        "securityDefinitions": {"b": {"type": "basic"}, "k": {"type": "apiKey", "in": "header", "name": "X-K"}},
        "paths": {"/a/{id}": {"get": {"security": [{"b": []}]}, "post": {"security": [{"k": []}]}}},
    }
    routes = import_routes(yaml.safe_dump(document), "old")
    assert [(r["path"], r["auth"]) for r in routes] == [
        ("old/a/:id", {"kind": "basic"}), ("old/a/:id", {"kind": "api_key", "header": "X-K"}),
    ]


def test_yaml_and_json_give_the_same_routes() -> None:
    text = """
openapi: 3.0.3
info: {title: t, version: '1'}
paths:
  /pets/{petId}:
    get:
      summary: Show pet
      description: One pet.
      responses:
        200: {description: ok}
"""
    from_yaml = import_routes(text, "pets")
    assert from_yaml == import_routes(json.dumps(yaml.safe_load(text)), "pets")
    assert from_yaml[0]["path"] == "pets/show-pet/:petId" and from_yaml[0]["description"] == "One pet."


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "not a mapping"),
        ("just words", "not a mapping"),
        ("", "not a mapping"),
        ('{"openapi": "3.1.0", "info": {}}', "no `paths`"),
        ('{"openapi": "3.1.0", "paths": []}', "no `paths`"),
        ('{"info": {}, "paths": {}}', "not OpenAPI"),
        ("openapi: 3.1.0\npaths: {a: [\n", "neither JSON nor YAML"),
        ("openapi: '3.1.0'\npaths:\n  /a: 5\n", "paths['/a'] is not an object"),
        ("openapi: '3.1.0'\npaths:\n  /a: {get: 5}\n", "paths['/a'].get is not an object"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_invalid_documents_are_a_422(text: str, problem: str) -> None:
    with pytest.raises(Invalid) as caught:
        import_routes(text, "api")
    assert caught.value.status == 422 and problem in caught.value.message


def test_yaml_aliases_cannot_blow_up_the_ref_check() -> None:
    # nine levels of ten aliases: a walk that followed every alias would visit 10^9 nodes
    lines = ["openapi: 3.1.0", "paths: {}", "x0: &x0 [{$ref: '#/paths'}]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines.append("loop: &loop [*loop]")
    assert import_routes("\n".join(lines), "api") == []


# --- export -------------------------------------------------------------------------------


ROUTES = [
    route("hooks/users/:id", "POST", auth={"kind": "jwt"}, summary="Update user", description="Changes one user."),
    route("hooks/users/:userId", "GET", auth={"kind": "basic"}),
    route("hooks/ping", "GET", auth={"kind": "api_key", "header": "X-API-Key"}, requestType="async"),
    route("hooks/pong", "DELETE", auth={"kind": "api_key", "header": "x-api-key"}),
    route("hooks/other", "PUT", auth={"kind": "api_key", "header": "X-Other-Key"}, requestType="sync_sse"),
    route("hooks/github", "POST", auth={"kind": "hmac", "preset": "github"}, description="From GitHub."),
    route("hooks/custom", "PATCH", auth={"kind": "custom", "script": "f/auth/check"}),
    route("/open/:a/:b/", "GET"),
]
WEBHOOKS = [
    {"kind": "webhook", "key": "abc", "runnable": {"kind": "flow", "path": "f/flow"}, "summary": "Nightly",
     "description": None, "hasSecret": True},
    {"kind": "webhook", "key": "def", "runnable": None, "summary": None, "description": None, "hasSecret": False},
    {"kind": "schedule", "cron": "* * * * *"},
]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_is_a_valid_openapi_31_document(fmt: str) -> None:
    document = export(ROUTES, WEBHOOKS, fmt=fmt)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "https://flow.example.com"}]
    assert list(document["paths"]) == [
        "/api/r/hooks/users/{id}", "/api/r/hooks/ping", "/api/r/hooks/pong", "/api/r/hooks/other",
        "/api/r/hooks/github", "/api/r/hooks/custom", "/api/r/open/{a}/{b}",
        "/api/v1/webhook/abc", "/api/v1/webhook/def",
    ]
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) == 10


def test_export_text_is_yaml_or_json() -> None:
    as_json = export_openapi(ROUTES, WEBHOOKS, title=None, version=None, description=None,
                             base_url="http://x", workspace_prefix=False, fmt="json")
    as_yaml = export_openapi(ROUTES, WEBHOOKS, title=None, version=None, description=None,
                             base_url="http://x", workspace_prefix=False, fmt="yaml")
    assert as_json.lstrip().startswith("{") and as_yaml.startswith("openapi: 3.1.0\n")
    assert json.loads(as_json) == yaml.safe_load(as_yaml)


def test_title_version_and_description() -> None:
    assert export([])["info"] == {"title": "Flowmill API", "version": "1.0.0"}
    info = export([], title="Hooks", version="2.3.4", description="Our hooks.")["info"]
    assert info == {"title": "Hooks", "version": "2.3.4", "description": "Our hooks."}


def test_path_params_and_shared_path_items() -> None:
    item = export(ROUTES)["paths"]["/api/r/hooks/users/{id}"]
    assert list(item) == ["post", "get"]  # users/:userId is the same route path, so it shares the item
    expected = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    assert item["post"]["parameters"] == item["get"]["parameters"] == expected
    assert item["post"]["summary"] == "Update user" and item["post"]["description"] == "Changes one user."
    assert item["post"]["requestBody"]["content"] == {"application/json": {"schema": {}}}
    assert "requestBody" not in item["get"]


def test_responses_follow_the_request_type() -> None:
    paths = export(ROUTES, WEBHOOKS)["paths"]
    assert list(paths["/api/r/hooks/users/{id}"]["post"]["responses"]["200"]["content"]) == ["application/json"]
    job = paths["/api/r/hooks/ping"]["get"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert job["properties"] == {"jobId": {"type": "string"}}
    assert list(paths["/api/r/hooks/other"]["put"]["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "202" in paths["/api/v1/webhook/abc"]["post"]["responses"]


def test_security_schemes() -> None:
    document = export(ROUTES, WEBHOOKS)
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "basicAuth": {"type": "http", "scheme": "basic"},
        "apiKey_X-API-Key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "apiKey_X-Other-Key": {"type": "apiKey", "in": "header", "name": "X-Other-Key"},
        "apiKey_X-Webhook-Secret": {"type": "apiKey", "in": "header", "name": "X-Webhook-Secret"},
    }
    paths = document["paths"]
    assert paths["/api/r/hooks/users/{id}"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/r/hooks/users/{id}"]["get"]["security"] == [{"basicAuth": []}]
    assert paths["/api/r/hooks/pong"]["delete"]["security"] == [{"apiKey_X-API-Key": []}]
    github = paths["/api/r/hooks/github"]["post"]
    assert "security" not in github and "X-Hub-Signature-256" in github["description"]
    assert github["description"].startswith("From GitHub.")
    assert "custom script" in paths["/api/r/hooks/custom"]["patch"]["description"]
    assert paths["/api/v1/webhook/abc"]["post"]["security"] == [{"apiKey_X-Webhook-Secret": []}]
    assert "security" not in paths["/api/v1/webhook/def"]["post"]
    assert "security" not in paths["/api/r/open/{a}/{b}"]["get"]


def test_only_used_schemes_are_listed() -> None:
    stripe = export([route("a", auth={"kind": "hmac", "preset": "stripe", "header": "X-Ignored"})])
    assert "components" not in stripe and "`Stripe-Signature`" in stripe["paths"]["/api/r/a"]["post"]["description"]
    generic = export([route("a", auth={"kind": "hmac", "preset": "generic"})], [WEBHOOKS[1]])
    assert "components" not in generic and "`X-Signature`" in generic["paths"]["/api/r/a"]["post"]["description"]
    only_basic = export([route("a", auth={"kind": "basic"})])
    assert list(only_basic["components"]["securitySchemes"]) == ["basicAuth"]


def test_workspace_prefix() -> None:
    document = export([route("a/:id", workspace="sales"), route("a/:id", workspace="main")], workspace_prefix=True)
    assert list(document["paths"]) == ["/api/r/sales/a/{id}", "/api/r/main/a/{id}"]


def test_export_round_trips_through_import() -> None:
    # hmac and custom have no OpenAPI scheme: they come back as "none", their note in the description
    kept = [r for r in ROUTES if r["auth"]["kind"] in ("none", "jwt", "basic", "api_key")]
    text = export_openapi(kept, [], title=None, version=None, description=None,
                          base_url="http://x", workspace_prefix=False, fmt="yaml")
    imported = import_routes(text, "copy")

    def essence(r: dict[str, Any]) -> str:
        auth = {**r["auth"], **({"header": r["auth"]["header"].lower()} if "header" in r["auth"] else {})}
        return json.dumps([r["method"], r["summary"], r["description"], auth])

    assert sorted(map(essence, imported)) == sorted(map(essence, kept))
    paths = {r["path"] for r in imported}
    assert {"copy/update-user/:id", "copy/api/r/hooks/users/:id", "copy/api/r/open/:a/:b"} <= paths
    github = import_routes(export_openapi(ROUTES[5:6], [], title=None, version=None, description=None,
                                          base_url="http://x", workspace_prefix=False, fmt="json"), "copy")
    assert github[0]["auth"] == {"kind": "none"} and "X-Hub-Signature-256" in github[0]["description"]


# --- curl ---------------------------------------------------------------------------------


BODY = {"title": "It's \"ours\"", "format": "yaml", "filters": {"pathPrefix": "hooks/$HOME `x`"}}


def test_curl_command_splits_back_to_the_body() -> None:
    command = curl_command("https://flow.example.com/", BODY)
    words = shlex.split(command)
    assert words[:5] == ["curl", "-sS", "-X", "POST", "https://flow.example.com/api/v1/routes/openapi/export"]
    assert "Authorization: Bearer $FLOWMILL_TOKEN" in words
    assert json.loads(words[words.index("-d") + 1]) == BODY


def test_curl_command_expands_the_token_and_nothing_else() -> None:
    script = 'curl() { printf "%s\\n" "$@"; }; ' + curl_command("http://x", BODY)
    out = subprocess.run(["bash", "-c", script], env={"FLOWMILL_TOKEN": "t0k", "HOME": "/nowhere"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "Authorization: Bearer t0k" in out
    assert json.loads(out[out.index("-d") + 1]) == BODY
