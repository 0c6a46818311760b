"""`/api/v1/flows`: create, read, list, change (each YAML change a revision), delete, validate,
export and import, revisions and restore, and who may do what."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer

OTHER = "flows-other"
FLOW_KEYS = {"id", "workspace", "name", "namespace", "description", "labels", "yamlContent", "revision", "path",
             "createdBy", "createdAt", "updatedBy", "updatedAt"}


def flow_yaml(name: str, namespace: str = "team", message: str = "hi", labels: dict[str, str] | None = None,
              description: str = "") -> str:
    """A valid flow of one `util.log` task."""
    lines = [f"name: {name}", f"namespace: {namespace}"]
    if description:
        lines.append(f"description: {description}")
    if labels:
        lines.append("labels:")
        lines += [f'  {key}: "{value}"' for key, value in labels.items()]
    lines += ["tasks:", "  - name: say", "    type: util.log", "    properties:", f"      message: {message}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> Iterator[httpx.Client]:
    with server.client(server.admin_token()) as client:
        if client.get(f"/api/v1/w/{OTHER}/flows").status_code == 404:
            assert client.post("/api/v1/workspaces", json={"id": OTHER, "name": "Flows"}).status_code == 201
        yield client


def create(api: httpx.Client, yaml: str, base: str = "/api/v1") -> dict[str, Any]:
    answer = api.post(f"{base}/flows", json={"yamlContent": yaml})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_create_get_and_a_taken_name(api: httpx.Client) -> None:
    yaml = flow_yaml("greet", description="says hello", labels={"env": "prod"})
    flow = create(api, yaml)
    assert set(flow) == FLOW_KEYS
    assert (flow["name"], flow["namespace"], flow["path"], flow["workspace"]) == ("greet", "team", "f/team/greet", "main")
    assert flow["description"] == "says hello" and flow["labels"] == {"env": "prod"}
    assert flow["yamlContent"] == yaml and flow["revision"] == 1
    assert flow["createdBy"] == flow["updatedBy"] == "admin" and flow["createdAt"] == flow["updatedAt"] > 0
    assert api.get(f"/api/v1/flows/{flow['id']}").json() == flow
    taken = api.post("/api/v1/flows", json={"yamlContent": flow_yaml("greet", message="other")})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    # the same name in another namespace is another flow
    assert create(api, flow_yaml("greet", namespace="elsewhere"))["path"] == "f/elsewhere/greet"
    # name and namespace may be repeated in the body: then they must be the YAML's
    matching = api.post("/api/v1/flows", json={"name": "named", "namespace": "team", "yamlContent": flow_yaml("named")})
    assert matching.status_code == 201
    mismatch = api.post("/api/v1/flows", json={"name": "other", "yamlContent": flow_yaml("named2")})
    assert mismatch.status_code == 400 and "name" in mismatch.json()["error"]["message"]
    assert api.post("/api/v1/flows", json={"yaml": flow_yaml("x")}).status_code == 400  # an unknown field


def test_invalid_yaml_is_422_with_path_and_line(server: FlowmillServer, api: httpx.Client) -> None:
    before = server.count("flow")
    syntax = "name: broken\nnamespace: team\ntasks:\n  - name: a\n    type: util.log\n   oops: [\n"
    answer = api.post("/api/v1/flows", json={"yamlContent": syntax})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    errors = error["details"]["errors"]
    assert errors and all(set(e) == {"path", "message", "line", "column"} for e in errors)
    assert any(e["line"] is not None and 4 <= e["line"] <= 7 and e["column"] is not None for e in errors), errors
    missing = api.post("/api/v1/flows", json={"yamlContent": "name: lonely\ntasks:\n  - {name: a, type: util.log}\n"})
    assert missing.status_code == 422
    assert "namespace" in [e["path"] for e in missing.json()["error"]["details"]["errors"]]
    slash = api.post("/api/v1/flows", json={"yamlContent": flow_yaml("a/b")})  # a name is one segment of the path
    assert slash.status_code == 422 and [e["path"] for e in slash.json()["error"]["details"]["errors"]] == ["name"]
    assert server.count("flow") == before  # nothing saved


def test_list_filters_and_cursor(api: httpx.Client) -> None:
    names = ["alpha-one", "alpha-two", "beta", "gamma", "Alpha_three"]
    for i, name in enumerate(names):
        create(api, flow_yaml(name, namespace="listing", labels={"env": "prod" if i % 2 else "dev", "n": str(i)}))
    create(api, flow_yaml("alpha-outside", namespace="listing2"))
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"namespace": "listing", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/flows", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"items", "nextCursor"} and len(body["items"]) <= 2
        seen += [f["name"] for f in body["items"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen)) and pages == 3
    def names_of(**params: Any) -> set[str]:
        answer = api.get("/api/v1/flows", params=params)
        assert answer.status_code == 200, answer.text
        return {f["name"] for f in answer.json()["items"]}
    assert names_of(namespace="listing", q="ALPHA") == {"alpha-one", "alpha-two", "Alpha_three"}
    assert names_of(q="alpha") >= {"alpha-one", "alpha-two", "Alpha_three", "alpha-outside"}
    assert names_of(q="a_t") == {"Alpha_three"}  # `_` is a character, not a LIKE wildcard
    assert names_of(namespace="listing", label="env=prod") == {"alpha-two", "gamma"}
    assert names_of(label="n=4") == {"Alpha_three"}
    assert names_of(namespace="listing", label="env=pro") == set()
    # a label filter that matches few flows still fills its pages
    labelled = api.get("/api/v1/flows", params={"namespace": "listing", "label": "env=dev", "limit": 2}).json()
    assert len(labelled["items"]) == 2 and labelled["nextCursor"] is not None
    rest = api.get("/api/v1/flows", params={"namespace": "listing", "label": "env=dev", "limit": 2,
                                            "cursor": labelled["nextCursor"]}).json()
    assert len(rest["items"]) == 1 and rest["nextCursor"] is None
    for bad in ({"label": "env"}, {"cursor": "not a cursor"}, {"limit": 0}, {"limit": 201}):
        assert api.get("/api/v1/flows", params=bad).status_code == 400, bad


def test_update_makes_a_revision_with_its_author(server: FlowmillServer, api: httpx.Client) -> None:
    flow = create(api, flow_yaml("changing"))
    editor = server.user("flow-editor", "editor")
    with server.client(editor) as as_editor:
        changed = as_editor.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("changing", message="v2")})
    assert changed.status_code == 200, changed.text
    updated = changed.json()
    assert updated["revision"] == 2 and updated["updatedBy"] == "flow-editor" and updated["createdBy"] == "admin"
    assert updated["updatedAt"] >= flow["updatedAt"] and updated["createdAt"] == flow["createdAt"]
    assert "v2" in updated["yamlContent"] and api.get(f"/api/v1/flows/{flow['id']}").json() == updated
    # the same YAML again changes nothing
    again = api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("changing", message="v2")})
    assert again.status_code == 200 and again.json() == updated
    revisions = api.get(f"/api/v1/flows/{flow['id']}/revisions").json()
    assert [(r["revision"], r["createdBy"]) for r in revisions] == [(2, "flow-editor"), (1, "admin")]
    assert revisions[1]["yamlContent"] == flow["yamlContent"]
    assert revisions[0]["hash"] == hashlib.sha256(updated["yamlContent"].encode()).hexdigest()[:32]
    # renaming: to a taken name is refused, to a free one moves the path
    create(api, flow_yaml("taken"))
    assert api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("taken")}).status_code == 409
    renamed = api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("renamed", namespace="moved")})
    assert renamed.status_code == 200 and renamed.json()["path"] == "f/moved/renamed" and renamed.json()["revision"] == 3
    assert api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": "name: x\n"}).status_code == 422
    assert api.get(f"/api/v1/flows/{flow['id']}").json()["revision"] == 3


def test_delete_takes_its_revisions(server: FlowmillServer, api: httpx.Client) -> None:
    flow = create(api, flow_yaml("doomed"))
    api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("doomed", message="v2")})
    assert server.count("flow_version", "flow_id = $1", flow["id"]) == 2
    assert api.delete(f"/api/v1/flows/{flow['id']}").status_code == 204
    assert api.get(f"/api/v1/flows/{flow['id']}").status_code == 404
    assert server.count("flow_version", "flow_id = $1", flow["id"]) == 0
    assert api.delete(f"/api/v1/flows/{flow['id']}").status_code == 404
    assert create(api, flow_yaml("doomed"))["revision"] == 1  # the name is free again


def test_validate(server: FlowmillServer, api: httpx.Client) -> None:
    before = server.count("flow")
    valid = api.post("/api/v1/flows/validate", json={"yamlContent": flow_yaml("checked")})
    assert valid.status_code == 200 and valid.json() == {"valid": True, "errors": []}
    invalid = api.post("/api/v1/flows/validate", json={"yamlContent": "name: [unclosed\nnamespace: team\n"})
    assert invalid.status_code == 200
    body = invalid.json()
    assert body["valid"] is False and body["errors"] and body["errors"][0]["line"] is not None
    assert set(body["errors"][0]) == {"path", "message", "line", "column"}
    structure = api.post("/api/v1/flows/validate", json={"yamlContent": "name: n\nnamespace: team\n"}).json()
    assert structure["valid"] is False and "tasks" in [e["path"] for e in structure["errors"]]
    deep = api.post("/api/v1/flows/validate", json={"yamlContent": "name: " + "[" * 5000 + "]" * 5000})
    assert deep.status_code == 200 and deep.json()["valid"] is False
    assert api.post("/api/v1/flows", json={"yamlContent": "name: " + "[" * 5000 + "]" * 5000}).status_code == 422
    too_large = api.post("/api/v1/flows/validate", json={"yamlContent": "#" * (600 * 1024)})
    assert too_large.status_code == 413
    assert server.count("flow") == before


def test_export_then_import_into_another_workspace(api: httpx.Client) -> None:
    flow = create(api, flow_yaml("travels", labels={"team": "ops"}))
    api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("travels", message="v2", labels={"team": "ops"})})
    exported = api.get(f"/api/v1/flows/{flow['id']}/export")
    assert exported.status_code == 200
    body = exported.json()
    assert {k: body[k] for k in ("name", "namespace", "labels", "revision")} == {
        "name": "travels", "namespace": "team", "labels": {"team": "ops"}, "revision": 2}
    assert "v2" in body["yamlContent"] and [r["revision"] for r in body["revisions"]] == [2, 1]
    assert {"revision", "yamlContent", "createdBy", "createdAt"} <= set(body["revisions"][0])
    imported = api.post(f"/api/v1/w/{OTHER}/flows/import", json=body)
    assert imported.status_code == 201, imported.text
    copy = imported.json()
    assert copy["workspace"] == OTHER and copy["id"] != flow["id"] and copy["revision"] == 1
    assert copy["yamlContent"] == body["yamlContent"] and copy["labels"] == {"team": "ops"}
    assert api.get(f"/api/v1/w/{OTHER}/flows/{copy['id']}").json() == copy
    # a flow of that name exists now: refused, unless overwritten (a new revision)
    again = api.post(f"/api/v1/w/{OTHER}/flows/import", json=body)
    assert again.status_code == 409 and again.json()["error"]["details"] == {"id": copy["id"]}
    changed = {**body, "yamlContent": flow_yaml("travels", message="v3", labels={"team": "ops"})}
    overwritten = api.post(f"/api/v1/w/{OTHER}/flows/import", params={"overwrite": "true"}, json=changed)
    assert overwritten.status_code == 201 and overwritten.json()["id"] == copy["id"]
    assert overwritten.json()["revision"] == 2 and "v3" in overwritten.json()["yamlContent"]
    same = api.post(f"/api/v1/w/{OTHER}/flows/import", params={"overwrite": "true"}, json=changed)
    assert same.status_code == 201 and same.json()["revision"] == 2  # the same YAML: nothing new
    # the YAML is what is imported: a name that is not its own is refused
    assert api.post("/api/v1/flows/import", json={**body, "name": "other"}).status_code == 400
    assert api.post("/api/v1/flows/import", json={"yamlContent": "name: x\n"}).status_code == 422


def test_restore_makes_a_new_revision(api: httpx.Client) -> None:
    flow = create(api, flow_yaml("restored", message="first"))
    api.put(f"/api/v1/flows/{flow['id']}", json={"yamlContent": flow_yaml("restored", message="second")})
    restored = api.post(f"/api/v1/flows/{flow['id']}/revisions/1/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["revision"] == 3 and restored.json()["yamlContent"] == flow["yamlContent"]
    revisions = api.get(f"/api/v1/flows/{flow['id']}/revisions").json()
    assert [r["revision"] for r in revisions] == [3, 2, 1] and revisions[0]["yamlContent"] == revisions[2]["yamlContent"]
    assert revisions[0]["hash"] == revisions[2]["hash"]
    assert api.post(f"/api/v1/flows/{flow['id']}/revisions/99/restore").status_code == 404
    assert api.post(f"/api/v1/flows/{flow['id']}/revisions/0/restore").status_code == 400
    assert api.post(f"/api/v1/flows/{flow['id']}/revisions/99999999999/restore").status_code == 400


def test_a_viewer_reads_and_validates_but_cannot_write(server: FlowmillServer, api: httpx.Client) -> None:
    flow = create(api, flow_yaml("watched"))
    viewer = server.user("flow-viewer", "viewer")
    with server.client(viewer) as as_viewer:
        for path in ("/api/v1/flows", f"/api/v1/flows/{flow['id']}", f"/api/v1/flows/{flow['id']}/export",
                     f"/api/v1/flows/{flow['id']}/revisions"):
            assert as_viewer.get(path).status_code == 200, path
        assert as_viewer.post("/api/v1/flows/validate", json={"yamlContent": flow["yamlContent"]}).json()["valid"] is True
        yaml = {"yamlContent": flow_yaml("watched", message="changed")}
        for method, path, kwargs in (
            ("POST", "/api/v1/flows", {"json": {"yamlContent": flow_yaml("by-viewer")}}),
            ("PUT", f"/api/v1/flows/{flow['id']}", {"json": yaml}),
            ("DELETE", f"/api/v1/flows/{flow['id']}", {}),
            ("POST", "/api/v1/flows/import", {"json": {"yamlContent": flow_yaml("by-viewer")}}),
            ("POST", f"/api/v1/flows/{flow['id']}/revisions/1/restore", {}),
        ):
            assert as_viewer.request(method, path, **kwargs).status_code == 403, (method, path)
    assert api.get(f"/api/v1/flows/{flow['id']}").json() == flow


def test_workspaces_keep_their_own_flows(api: httpx.Client) -> None:
    main = create(api, flow_yaml("shared-name"))
    other = create(api, flow_yaml("shared-name"), base=f"/api/v1/w/{OTHER}")  # the same name in another workspace
    assert other["workspace"] == OTHER and other["id"] != main["id"]
    assert api.get(f"/api/v1/w/main/flows/{main['id']}").json() == main
    assert api.get(f"/api/v1/flows/{other['id']}").status_code == 404
    assert api.get(f"/api/v1/w/{OTHER}/flows/{main['id']}").status_code == 404
    listed = api.get(f"/api/v1/w/{OTHER}/flows", params={"q": "shared-name"}).json()["items"]
    assert [f["id"] for f in listed] == [other["id"]]


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    yaml = {"yamlContent": flow_yaml("nowhere")}
    for method, path, kwargs in (
        ("GET", "/api/v1/flows/no-such-flow", {}),
        ("PUT", "/api/v1/flows/no-such-flow", {"json": yaml}),
        ("DELETE", "/api/v1/flows/no-such-flow", {}),
        ("GET", "/api/v1/flows/no-such-flow/export", {}),
        ("GET", "/api/v1/flows/no-such-flow/revisions", {}),
        ("POST", "/api/v1/flows/no-such-flow/revisions/1/restore", {}),
    ):
        answer = api.request(method, path, **kwargs)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", (method, path)
