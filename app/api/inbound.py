"""Where the outside world starts runs: HTTP routes (`/api/r/...`) and webhooks
(`POST /api/v1/webhook/{key}`).

A request is matched, authenticated by the route's own scheme over the exact raw body, and
only then turned into a run: a refused request creates nothing and its answer says nothing
of the route's settings. sync answers with the result, async with `{"jobId"}` (202) once the
run is committed, sync_sse with a stream of its output and result.

A run acts as whoever last created or changed the route or webhook (its `runAs`), with the
role they hold now, or for a `jwt` route as the caller, who needs the executor role. What a
request carries (body, query, path parameters, headers) is data, never a `$var:`/`$res:`/
`$cred:` reference. `custom` checks run as the route's identity, a few at a time.
"""

from __future__ import annotations

import hmac
import logging
import time
import urllib.parse
from typing import Any

import msgspec
from litestar import Request, Response, post, route
from litestar.response import ServerSentEvent

from app.api.bounds import check_depth
from app.api.context import read_body
from app.api.documented import ANY_JSON
from app.api.respond import route_answer
from app.api.v1.jobs import run_events
from app.errors import BadRequest, FlowmillError, Forbidden, MethodNotAllowed, NotFound, Unauthorized, Unavailable
from app.security.signatures import ALWAYS_SECRET_HEADERS, Refused, verify_api_key, verify_basic, verify_hmac
from app.api.context import bearer_token
from app.services import Services
from app.services.actor import Actor, at_least
from app.services.jobs import Trigger
from app.services.routes import METHODS, Route
from app.services.static import content_type

CUSTOM_AUTH_TIMEOUT_S = 10.0
log = logging.getLogger("flowmill.routes")
WEBHOOK_SECRET_HEADER = "x-webhook-secret"
_WEBHOOK_HIDDEN = ALWAYS_SECRET_HEADERS | {WEBHOOK_SECRET_HEADER}


# An uploaded site is the uploader's code served from the API's own origin: sandboxed, its pages
# run in an opaque origin of their own, so their scripts can neither read the API's answers with a
# visitor's credentials nor anything the origin keeps (storage, cookies). Forms, popups and scripts
# still work within the page.
STATIC_SITE_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


class NoRunnable(FlowmillError):
    """A route (an imported one, say) that has nothing to run yet."""

    status = 501
    code = "no_runnable"


class _EventStream(ServerSentEvent):
    """Server-sent events from a handler whose media type is JSON (its sync answers): Litestar
    would give a stream the handler's media type over its own."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


class Accepted(msgspec.Struct, rename="camel"):
    job_id: str


def _refused(request: Request, trigger: str, message: str = "the request is not authenticated",
             headers: dict[str, str] | None = None) -> Unauthorized:
    request.app.state.metrics.count("flowmill_trigger_requests_total", trigger=trigger, outcome="refused")
    return Unauthorized(message, headers=headers)


def _headers(request: Request) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in request.scope["headers"]}


def _body(raw: bytes, headers: dict[str, str], raw_body: bool) -> Any:
    """The body as the script sees it: JSON decoded, a form as a dict, other text as a string."""
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw or not raw.strip():
        return {}
    if kind == "application/x-www-form-urlencoded":
        return dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if kind in ("application/json", "") or kind.endswith("+json"):
        check_depth(raw)
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as error:
            if kind and not raw_body:  # said to be JSON and is not: the sender's mistake
                raise BadRequest(f"the body is not valid JSON: {error}") from None
    return raw.decode("utf-8", "replace")


def _event(kind: str, route_path: str, path: str, method: str, body: Any, raw: bytes, params: dict[str, str],
           query: dict[str, str], headers: dict[str, str], hidden: frozenset[str]) -> dict[str, Any]:
    """What a preprocessor receives (DESIGN 4.3), and what a run keeps of its request: without
    the `hidden` headers, which carried the route's secret or a caller's credentials."""
    return {
        "kind": kind, "body": body, "raw_string": raw.decode("utf-8", "replace"), "route": route_path, "path": path,
        "method": method, "params": params, "query": query,
        "headers": {k: v for k, v in headers.items() if k not in hidden},
    }


def _args(body: Any, raw: bytes, params: dict[str, str], query: dict[str, str | list[str]], wrap: bool, raw_body: bool,
          form: bool) -> tuple[dict[str, Any], frozenset[str]]:
    """main's arguments without a preprocessor: the body's keys (or `body` when wrapped or not an
    object), the raw text as `raw_string` when asked, the query's keys, the path parameters; and
    the names of those that came as text (the query's, the path's, a form's), which are
    converted to main's types."""
    args = dict(body) if isinstance(body, dict) and not wrap else {"body": body}
    text = set(args) if form and not wrap else set()
    if raw_body:
        args["raw_string"] = raw.decode("utf-8", "replace")
    for key, value in query.items():
        if key not in args:
            args[key] = value
            text.add(key)
    args.update(params)
    text.update(params)
    return args, frozenset(text)


def _query_args(request: Request) -> dict[str, str | list[str]]:
    """The query as main's arguments: a key given more than once is the list of its values."""
    return {key: values[0] if len(values) == 1 else values for key, values in request.query_params.dict().items()}


def _is_form(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


async def _identity(services: Services, username: str, workspace: str, request: Request) -> Actor:
    """The actor a run acts as: `username` with the role they hold in the workspace now
    (None when they are no longer a member: the run then fails, it never acts)."""
    role = await services.jobs.role_of(username, workspace)
    return Actor(username, workspace, role, request_id=request.scope["state"]["request_id"])


async def _authenticate(request: Request, services: Services, route: Route, raw: bytes, headers: dict[str, str],
                        event: dict[str, Any]) -> Actor:
    """Who runs of this request act as (the route's last editor, or the token's user for
    jwt); raises Unauthorized without a word about the route's settings."""
    auth = route.auth
    kind = auth["kind"]
    try:
        if kind == "api_key":
            verify_api_key(auth, headers)
        elif kind == "basic":
            verify_basic(auth, headers)
        elif kind == "hmac":
            verify_hmac(auth, raw, headers, time.time())
        elif kind == "jwt":
            token = bearer_token(request.scope["headers"])
            if token is None:
                raise Refused("no bearer token")
            caller = await services.accounts.authenticate(token, route.workspace)
            role = "admin" if caller.superadmin else caller.role
            if role is None:
                raise Forbidden(f"{caller.username} has no access to workspace {route.workspace}")
            if not at_least(role, "executor"):  # running needs the executor role, here as everywhere
                raise Forbidden(f"running needs the executor role in {route.workspace}; {caller.username} is {role}")
            return Actor(caller.username, route.workspace, role, request_id=request.scope["state"]["request_id"],
                         run_id=caller.run_id, run_token_exp=caller.expires)
        elif kind == "custom":
            actor = await _identity(services, route.run_as, route.workspace, request)
            if actor.role is None:
                log.warning("route %s acts as %s, who is not a member of %s: refused", route.path, route.run_as,
                            route.workspace)
                raise Refused("the route's identity is not a member")
            try:
                verdict = await services.jobs.evaluate(actor, auth["script"], {"event": event}, CUSTOM_AUTH_TIMEOUT_S)
            except Unavailable:
                raise  # too many checks at once: 503, the request may come again
            except FlowmillError as error:  # a failing check refuses: it never lets a request through
                log.warning("the custom auth script of route %s failed: %s", route.path, error.message)
                raise Refused("the custom script failed") from None
            allowed = verdict is True or (isinstance(verdict, dict) and verdict.get("allow") is True)
            if not allowed:
                raise Refused("the custom script said no")
    except Refused as refusal:
        # The reason's class for whoever debugs a sender (which header was missing, a mismatch, a
        # timestamp skew); never a secret, and never to the caller, who gets a bare 401.
        log.info("refused %s /api/r/%s (%s auth): %s", request.method, route.path, kind, refusal.reason)
        challenge = {"WWW-Authenticate": 'Basic realm="flowmill"'} if kind == "basic" else {}
        raise _refused(request, "route", headers=challenge) from None
    except FlowmillError as error:
        if isinstance(error, (Unauthorized, Forbidden)):
            log.info("refused %s /api/r/%s (%s auth): %s", request.method, route.path, kind, error.message)
            request.app.state.metrics.count("flowmill_trigger_requests_total", trigger="route", outcome="refused")
        raise
    return await _identity(services, route.run_as, route.workspace, request)


class CorsRefused(FlowmillError):
    """A CORS preflight from an origin, or for a method, the route does not allow: not an ok
    status, so the browser fails the preflight (Fetch), and the envelope says why to whoever
    reads it."""

    status = 403
    code = "cors_refused"


@route("/api/r/{rest:path}", http_method=[*METHODS, "OPTIONS"], opt={"audit": False}, include_in_schema=False)
async def serve_route(request: Request, rest: str) -> Any:
    """Serve a request to one of the workspace's HTTP routes."""
    services: Services = request.app.state.services
    table = await services.routes.table()
    path = rest.strip("/")
    workspace = ""
    if table.prefixed:
        workspace, _, path = path.partition("/")
    by_method, params, tail = table.match(workspace, path)
    if not by_method:
        raise NotFound("no route at this path")
    found = by_method.get(request.method)
    if found is None:
        if request.method == "OPTIONS":
            return _preflight(request, by_method)
        allowed = ", ".join(sorted(by_method))
        raise MethodNotAllowed(f"this route answers {allowed}", {"allowed": sorted(by_method)}, {"Allow": allowed})
    if found.cors is None:
        return await _serve(request, services, found, rest, path, params, tail)
    origin = request.headers.get("origin")
    if not found.cors.allows(origin):
        return await _serve(request, services, found, rest, path, params, tail)
    assert origin is not None
    cors = found.cors.headers_for(origin)
    try:
        answer = await _serve(request, services, found, rest, path, params, tail)
    except FlowmillError as error:  # a refusal (401), a failed run (422): a page of that origin may read it too
        error.headers = {**(error.headers or {}), **cors}
        raise
    answer.headers.update(cors)
    return answer


def _preflight(request: Request, by_method: dict[str, Route]) -> Response[bytes]:
    """A CORS preflight, answered by the settings of the route it asks about, before any auth
    or run; an OPTIONS that is not one, or asks about a route without CORS, is a 405."""
    origin = request.headers.get("origin")
    method = request.headers.get("access-control-request-method")
    target = by_method.get(method) if origin and method else None
    if target is None or target.cors is None:
        allowed = ", ".join(sorted(by_method))
        raise MethodNotAllowed(f"this route answers {allowed}", {"allowed": sorted(by_method)}, {"Allow": allowed})
    assert origin is not None and method is not None
    headers = target.cors.preflight(origin, method, request.headers.get("access-control-request-headers"))
    if headers is None:
        raise CorsRefused(f"this route does not allow {method} requests from {origin[:100]}", None, {"vary": "Origin"})
    return Response(b"", status_code=204, headers=headers)


async def _serve(request: Request, services: Services, found: Route, rest: str, path: str, params: dict[str, str],
                 tail: str) -> Any:
    """Authenticate the request to `found` and answer it."""
    raw = await read_body(request, services.settings.max_body_bytes)
    headers = _headers(request)
    custom = found.auth["kind"] == "custom"  # the one scheme that needs the event: it decides on it
    if not custom:  # before reading the body: a stranger learns nothing of how it would be read
        actor = await _authenticate(request, services, found, raw, headers, {})
    query = dict(request.query_params)
    body = None if found.static is not None else _body(raw, headers, found.raw_body)
    event = _event("http", found.path, path, request.method, body, raw, params, query, headers, found.hidden_headers)
    if custom:  # the check sees the request whole, credentials included: judging them is its job
        actor = await _authenticate(request, services, found, raw, headers, {**event, "headers": headers})
    if found.static is not None:
        return await _static(request, services, found, tail, rest.endswith("/"))
    if found.runnable is None:
        raise NoRunnable(f"the route {found.method} {found.path} has no script attached yet")
    request.app.state.metrics.count("flowmill_trigger_requests_total", trigger="route", outcome="accepted")
    args, text = _args(body, raw, params, _query_args(request), found.wrap_body, found.raw_body, _is_form(headers))
    trigger = Trigger("route", f"{found.method} {found.path}")
    script = found.runnable.path
    if found.runnable.kind == "flow":  # its inputs are the request's keys it declares; the rest is `trigger`
        if found.request_type == "sync":
            job_id, outcome = await services.executions.run_and_wait(actor, script, args, trigger, event=event,
                                                                     text=text)
            return route_answer(job_id, outcome)
        job_id = (await services.executions.start(actor, script, args, trigger, event=event, text=text)).execution_id
    elif found.request_type == "sync":
        job_id, outcome = await services.jobs.run_and_wait(actor, args, trigger, path=script, event=event, text=text)
        return route_answer(job_id, outcome)
    else:
        job_id = await services.jobs.enqueue(actor, args, trigger, path=script, event=event, text=text)
    if found.request_type == "async":
        return Response(Accepted(job_id), status_code=202, headers={"x-job-id": job_id})
    return _EventStream(run_events(services, found.workspace, job_id), headers={"x-job-id": job_id},
                        status_code=200)


async def _static(request: Request, services: Services, found: Route, tail: str, slash: bool) -> Response[bytes]:
    assert found.static is not None
    if slash and tail:
        tail += "/"
    hit = await services.static.find(found.workspace, found.static.folder, tail, found.static.website)
    if hit is None:
        raise NotFound("no such file")
    path, content, etag = hit
    quoted = f'"{etag}"'
    cache = "no-cache" if path.endswith(".html") else "public, max-age=3600"
    headers = {"etag": quoted, "cache-control": cache, "x-content-type-options": "nosniff",
               "content-security-policy": STATIC_SITE_POLICY}
    if request.headers.get("if-none-match") == quoted:
        return Response(b"", status_code=304, headers=headers)
    # The type as it is (Litestar would add a second charset to a text/* media type); 200 said
    # outright, since this handler also answers POST, whose default is 201.
    return Response(content, status_code=200, headers={**headers, "content-type": content_type(path)})


@post("/api/v1/webhook/{key:str}", opt={"audit": False, "body": ANY_JSON}, status_code=202, include_in_schema=True)
async def fire_webhook(request: Request, key: str) -> Response[Accepted]:
    """Fire a webhook trigger: its script runs with the body; answered with the run's id
    once it is committed. A webhook with a secret wants it in `X-Webhook-Secret`."""
    services: Services = request.app.state.services
    webhook = await services.triggers.webhook(key)
    if webhook is None or not webhook.enabled:
        raise NotFound("no webhook with this key")
    headers = _headers(request)
    if webhook.secret is not None:
        given = headers.get(WEBHOOK_SECRET_HEADER) or ""  # never from the URL: secrets do not travel in URLs
        if not hmac.compare_digest(given.encode(), webhook.secret.encode()):
            log.info("refused POST /api/v1/webhook/%s: %s", webhook.id, "no X-Webhook-Secret" if not given else "secret mismatch")
            raise _refused(request, "webhook", "this webhook needs its secret in X-Webhook-Secret")
    raw = await read_body(request, services.settings.max_body_bytes)
    body = _body(raw, headers, raw_body=False)
    # A webhook's secret sent in the URL as well is not stored with the run's event.
    query = dict(request.query_params)
    if webhook.secret is not None:
        query.pop("secret", None)
    event = _event("webhook", key, key, request.method, body, raw, {}, query, headers, _WEBHOOK_HIDDEN)
    request.app.state.metrics.count("flowmill_trigger_requests_total", trigger="webhook", outcome="accepted")
    args, text = _args(body, raw, {}, {}, wrap=False, raw_body=False, form=_is_form(headers))
    actor = await _identity(services, webhook.run_as, webhook.workspace, request)
    if webhook.kind == "flow":
        job_id = (await services.executions.start(actor, webhook.path, args, Trigger("webhook", webhook.id),
                                                  event=event)).execution_id
    else:
        job_id = await services.jobs.enqueue(actor, args, Trigger("webhook", webhook.id), path=webhook.path,
                                             event=event, text=text)
    return Response(Accepted(job_id), status_code=202, headers={"x-job-id": job_id})


HANDLERS = [serve_route, fire_webhook]
