"""The Litestar application: routes, the one guard, the error envelope, metrics, OpenAPI."""

from __future__ import annotations

from importlib import resources as package_files
from pathlib import Path

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar._openapi.plugin import handle_schema_path_not_found
from litestar.static_files import create_static_files_router
from litestar.routes import BaseRoute
from litestar.types import ControllerRouterHandler

import app as flowmill
from app.api.windmill import windmill_routers
from app.api import inbound
from app.api import workflows as instances_api
from app.api.context import bound_typed_body
from app.api.v1 import (
    approvals, audit, auth, credentials, executions, flows, health, jobs, kv, plugins, routes, scripts, triggers, variables,
    workspaces,
)
from app.server.audit import check_declared
from app.server.errors import EXCEPTION_HANDLERS
from app.server.logs import AccessLog
from app.server.metrics import Metrics
from app.server.openapi import OpenAPIJson, SwaggerUI
from app.server.middleware import request_middleware
from app.services import Services

# Resources that belong to a workspace: served at /api/v1/... (main) and /api/v1/w/{workspace}/...
WORKSPACE_HANDLERS = [
    *credentials.HANDLERS, *kv.HANDLERS, *audit.HANDLERS, *scripts.HANDLERS, *jobs.HANDLERS, *variables.HANDLERS,
    *routes.HANDLERS, *triggers.HANDLERS, *flows.HANDLERS, *executions.HANDLERS, *approvals.HANDLERS, *plugins.HANDLERS,
]


# The API explorer's files ship with Flowmill (swagger-ui-dist, app/assets/swagger-ui): the docs
# work with no network, and the page loads nothing from another host.
DOCS_ASSETS = "/api/v1/docs/assets"
_SWAGGER_UI = Path(str(package_files.files("app").joinpath("assets/swagger-ui")))


def _docs() -> SwaggerUI:
    return SwaggerUI(
        path="/docs",
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
    )


class _DocsRouter(Router):
    """The router of the OpenAPI document and the explorer, without the HTML 404 page Litestar
    adds for any other path below it (here /api/v1/...): every answer under /api is JSON."""

    def register(self, value: ControllerRouterHandler) -> list[BaseRoute]:
        if getattr(value, "fn", None) is handle_schema_path_not_found:
            return []
        return super().register(value)


def create_app(services: Services) -> Litestar:
    """The whole HTTP surface over `services`."""
    metrics = Metrics(services.db, services.jobs.started, services.retention)
    access = AccessLog(services.settings.access_log, services.settings.log_json)
    openapi = OpenAPIConfig(
        title="Flowmill API",
        version=flowmill.__version__,
        path="/api/v1",
        render_plugins=[_docs(), OpenAPIJson()],
        openapi_router=_DocsRouter("/api/v1", route_handlers=[], include_in_schema=False),
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="a session JWT or an API token")
            }
        ),
        security=[{"bearer": []}],
    )
    app = Litestar(
        route_handlers=[
            *auth.HANDLERS,
            *health.HANDLERS,
            Router("/api/v1", route_handlers=[*workspaces.HANDLERS, *routes.INSTANCE_HANDLERS, *WORKSPACE_HANDLERS]),
            *inbound.HANDLERS,
            Router("/api/v1/w/{workspace:str}", route_handlers=[*WORKSPACE_HANDLERS, *instances_api.HANDLERS]),
            # DESIGN §4.4: the instances API's paths under /api (workspace main; others at /api/v1/w/{workspace})
            Router("/api", route_handlers=[*instances_api.HANDLERS, *instances_api.TICK_HANDLERS]),
            *windmill_routers(),
            create_static_files_router(DOCS_ASSETS, [_SWAGGER_UI], include_in_schema=False,
                                       cache_control=None, send_as_attachment=False),
        ],
        middleware=[request_middleware(metrics, access, services.jobs.executor, services.settings.body_timeout_s,
                                       services.audit)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=bound_typed_body,
        openapi_config=openapi,
        request_max_body_size=services.settings.max_body_bytes,
        state=State({"services": services, "metrics": metrics, "access": access}),
        logging_config=None,
        debug=False,
    )
    check_declared(app)  # every change audited: a handler that forgets to say how cannot be served
    return app
