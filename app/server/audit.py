"""One audit path: every mutating handler declares its action, and every change is audited.

A handler answering POST, PUT, PATCH or DELETE declares `opt={"audit": "route.create"}`, or
`opt={"audit": False}` for what is not a change of the instance (`/auth/login`) or is recorded
as a run (`/api/r/...`, `/api/v1/webhook/...`); `create_app` refuses to build an app where one
declares neither (`check_declared`), so a new endpoint cannot forget.

A handler's success is audited once:
- where its service writes the entry in the transaction of its change (`audit.entry`), it is
  durable with the change;
- else the server writes it (`record_success`) after the change is committed and before the
  answer is sent, with the status answered and the request's path as its target;
- a run endpoint (`opt["audit_success"] = False`) is recorded by its run (who, when, what,
  outcome); only its refusals are audited.
A failure or a change that matched nothing (404) is audited by the error handler, once.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute

from app.server.access import MUTATING
from app.services.actor import Actor
from app.services.audit import AuditLog


def undeclared(app: Litestar) -> list[str]:
    """`METHOD path` of every mutating handler that declares no `audit`, nor a `role`."""
    missing = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            methods = handler.http_methods & MUTATING
            if not methods:
                continue
            audit = handler.opt.get("audit")
            if not (isinstance(audit, str) and audit) and audit is not False:
                missing.extend(f"{method} {route.path} (no audit)" for method in sorted(methods))
            if audit is not False and "role" not in handler.opt:
                missing.extend(f"{method} {route.path} (no role)" for method in sorted(methods))
    return missing


def check_declared(app: Litestar) -> None:
    """Refuse an app with a mutating handler that declares no audit action (or no role)."""
    missing = undeclared(app)
    if missing:
        raise RuntimeError(f"mutating handlers without an audit declaration: {', '.join(missing)}")


async def record_success(audit: AuditLog, actor: Actor, target: str, status: int) -> None:
    """The entry of a change whose service wrote none (see the module's docstring)."""
    await audit.record(actor, target, "success", status)
