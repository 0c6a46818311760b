"""Variables (plain and secret), resources with $var:/$res: interpolation, resource types."""

from __future__ import annotations

import httpx
import pytest

from tests.support import FlowmillServer


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        yield client


def test_variables(server: FlowmillServer, api: httpx.Client) -> None:
    assert api.post("/api/v1/variables", json={"path": "f/cfg/region", "value": "eu-west"}).status_code == 201
    secret = api.post("/api/v1/variables", json={"path": "f/cfg/password", "value": "hunter2-secret", "isSecret": True})
    assert secret.status_code == 201 and secret.json()["value"] is None
    assert api.post("/api/v1/variables", json={"path": "f/cfg/region", "value": "x"}).status_code == 409
    assert api.post("/api/v1/variables", json={"path": "nope", "value": "x"}).status_code == 400
    listed = api.get("/api/v1/variables").text
    assert "eu-west" in listed and "hunter2-secret" not in listed
    assert api.get("/api/v1/variables/value/f/cfg/password").json() == "hunter2-secret"
    viewer = server.user("var-viewer", "viewer")
    with server.client(viewer) as client:
        assert client.get("/api/v1/variables/value/f/cfg/region").json() == "eu-west"
        assert client.get("/api/v1/variables/value/f/cfg/password").status_code == 403
        assert client.put("/api/v1/variables/p/f/cfg/region", json={"value": "x"}).status_code == 403
    updated = api.put("/api/v1/variables/p/f/cfg/region", json={"value": "us-east", "description": "where"})
    assert updated.json()["value"] == "us-east" and updated.json()["description"] == "where"
    assert not any(b"hunter2-secret" in p.read_bytes() for p in server.home.rglob("*") if p.is_file())
    assert api.delete("/api/v1/variables/p/f/cfg/region").status_code == 204
    assert api.get("/api/v1/variables/p/f/cfg/region").status_code == 404


def test_resources_interpolate_references(api: httpx.Client) -> None:
    api.post("/api/v1/variables", json={"path": "f/db/pw", "value": "pw-1", "isSecret": True}).raise_for_status()
    api.post("/api/v1/resources", json={"path": "f/db/base", "resourceType": "postgresql",
                                        "value": {"host": "db", "user": "app", "dbname": "x", "password": "$var:f/db/pw"}}).raise_for_status()
    api.post("/api/v1/resources", json={"path": "f/db/wrapper", "resourceType": "any",
                                        "value": {"inner": "$res:f/db/base", "list": ["$var:f/db/pw", 1]}}).raise_for_status()
    assert api.get("/api/v1/resources/value/f/db/wrapper").json() == {
        "inner": {"host": "db", "user": "app", "dbname": "x", "password": "pw-1"}, "list": ["pw-1", 1]}
    assert api.get("/api/v1/resources/value/f/db/wrapper", params={"interpolate": "false"}).json()["inner"] == "$res:f/db/base"
    assert api.post("/api/v1/resources", json={"path": "f/db/bad", "resourceType": "nosuchtype", "value": {}}).status_code == 400
    assert [r["path"] for r in api.get("/api/v1/resources", params={"resource_type": "postgresql"}).json()] == ["f/db/base"]
    api.post("/api/v1/resources", json={"path": "f/db/loop", "resourceType": "any", "value": "$res:f/db/loop"}).raise_for_status()
    assert api.get("/api/v1/resources/value/f/db/loop").status_code == 400


def test_resource_types(api: httpx.Client) -> None:
    names = {t["name"] for t in api.get("/api/v1/resource_types").json()}
    assert {"postgresql", "mysql", "redis", "s3", "smtp", "slack", "http_bearer", "http_basic", "state"} <= names
    created = api.post("/api/v1/resource_types", json={"name": "my_api", "schema": {"type": "object"}, "description": "d"})
    assert created.status_code == 201
    assert api.post("/api/v1/resource_types", json={"name": "postgresql", "schema": {}}).status_code == 409
    assert api.post("/api/v1/resource_types", json={"name": "Bad Name", "schema": {}}).status_code == 400
    assert api.post("/api/v1/resources", json={"path": "f/x/mine", "resourceType": "my_api", "value": {}}).status_code == 201
    assert api.delete("/api/v1/resource_types/my_api").status_code == 204
    assert api.delete("/api/v1/resource_types/my_api").status_code == 404
