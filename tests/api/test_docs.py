"""The API explorer at /api/v1/docs works offline: everything it loads is served by Flowmill."""

from __future__ import annotations

import re

import httpx

from tests.support import FlowmillServer


def test_docs_load_nothing_from_another_host(server: FlowmillServer) -> None:
    page = httpx.get(f"{server.url}/api/v1/docs")
    assert page.status_code == 200
    html = page.text
    head = html[: html.index("<body")]
    references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", head)
    assert len(references) >= 4, references  # the css, two scripts, the icon
    for reference in references:
        assert reference.startswith("/"), f"{reference} is loaded from another host"
        asset = httpx.get(f"{server.url}{reference}")
        assert asset.status_code == 200, reference
        assert len(asset.content) > 500, reference
    assert "SwaggerUIBundle(" in html and '"openapi"' in html
    bundle = httpx.get(f"{server.url}/api/v1/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    # Swagger UI renders OpenAPI 3.1 from its version 5 on.
    assert re.search(r'version:"5\.|"5\.\d+\.\d+"', bundle.text[:5_000_000]) or "5.35.0" in (
        httpx.get(f"{server.url}/api/v1/docs/assets/VERSION").text)


def test_every_answer_under_api_is_json(server: FlowmillServer) -> None:
    token = server.admin_token()
    for accept in ("text/html", "*/*", "application/xml"):
        headers = {"Accept": accept, "Authorization": f"Bearer {token}"}
        for method, path, status in (
            ("GET", "/api/v1/nope", 404), ("GET", "/api/v1/nope/deeper", 404), ("GET", "/api/nope", 404),
            ("GET", "/api/w/main/nope", 404), ("GET", "/api/v1/w/main/nope", 404),
            ("DELETE", "/api/v1/scripts", 405), ("PUT", "/api/v1/docs", 405), ("PATCH", "/auth/login", 405),
        ):
            answer = httpx.request(method, f"{server.url}{path}", headers=headers)
            assert answer.status_code == status, (method, path, answer.status_code)
            assert answer.headers["content-type"].startswith("application/json"), (method, path, accept)
            assert answer.json()["error"]["code"] == ("not_found" if status == 404 else "method_not_allowed")
