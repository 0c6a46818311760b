"""`/api/v1/plugins`: the catalogue of task types, its categories and one plugin's manifest."""

from __future__ import annotations

import httpx
import pytest

from tests.support import FlowmillServer

FIELDS = {"id", "name", "category", "description", "inputSchema", "outputSchema", "credential", "role", "control"}
CATEGORIES = ["flow", "flowmill", "http", "kv", "script", "util"]


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        yield client


def test_the_list_has_every_plugin_with_its_manifest(api: httpx.Client) -> None:
    answer = api.get("/api/v1/plugins")
    assert answer.status_code == 200, answer.text
    plugins = answer.json()
    ids = [p["id"] for p in plugins]
    assert ids == sorted(ids) and {"util.log", "http.request", "script.shell", "flow.foreach"} <= set(ids)
    assert all(set(p) == FIELDS for p in plugins)
    request = next(p for p in plugins if p["id"] == "http.request")
    assert request["inputSchema"]["required"] == ["url"] and request["inputSchema"]["properties"]["method"]["default"] == "GET"
    assert request["outputSchema"]["required"] == ["status", "headers", "body"]
    assert (request["credential"], request["role"], request["control"]) == (None, "executor", False)
    foreach = next(p for p in plugins if p["id"] == "flow.foreach")
    assert foreach["control"] is True and "tasks" not in foreach["inputSchema"]["properties"]


def test_the_list_filtered_by_category(api: httpx.Client) -> None:
    kv = api.get("/api/v1/plugins", params={"category": "kv"}).json()
    assert [p["id"] for p in kv] == ["kv.delete", "kv.get", "kv.set"]
    assert api.get("/api/v1/plugins", params={"category": "nothing"}).json() == []


def test_categories(api: httpx.Client) -> None:
    answer = api.get("/api/v1/plugins/categories")
    assert answer.status_code == 200 and answer.json() == CATEGORIES


def test_one_plugin_and_an_unknown_one(api: httpx.Client) -> None:
    one = api.get("/api/v1/plugins/util.set")
    assert one.status_code == 200 and one.json()["outputSchema"]["required"] == ["value"]
    assert one.json() == next(p for p in api.get("/api/v1/plugins").json() if p["id"] == "util.set")
    missing = api.get("/api/v1/plugins/util.nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found" and "util.nothing" in missing.json()["error"]["message"]


def test_a_viewer_reads_the_catalogue_and_a_stranger_does_not(server: FlowmillServer) -> None:
    with server.client(server.user("plugin-viewer", "viewer")) as viewer:
        assert viewer.get("/api/v1/plugins").status_code == 200
        assert viewer.get("/api/v1/plugins/categories").json() == CATEGORIES
        assert viewer.get("/api/v1/w/main/plugins/http.request").json()["id"] == "http.request"
    with server.client() as stranger:
        assert stranger.get("/api/v1/plugins").status_code == 401
