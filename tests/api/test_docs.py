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
