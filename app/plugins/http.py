"""`http.request`: call an HTTP(S) endpoint from a flow.

On the event loop with `httpx.AsyncClient`: no thread is held while the other side thinks.
The whole exchange (connect, send, the whole answer) has one deadline, `timeout`. With
`retries`, a failure to connect and a 5xx answer are tried again after `retryInterval`,
doubled each time; a read timeout is not (the other side may have acted on the request). The
answer's body is decoded as JSON when its content type says JSON, else as text, and is refused
past `MAX_BODY_BYTES` rather than cut.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from typing import Any

import httpx

from app.plugins.durations import duration_schema, seconds
from app.plugins.registry import Manifest, Plugin, TaskContext, TaskFailed
from app.plugins.schema import anything, obj, string_map, text

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RETRY_INTERVAL_S = 30.0
QUOTED = 200  # characters of an answer's body quoted when its status fails the task


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every request: loading the CA bundle costs milliseconds."""
    return httpx.create_ssl_context()


async def request(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Send the request (again on a connect error or 5xx, `retries` times); `{status, headers, body}`.
    TaskFailed when it cannot be sent, times out, is too large, or its status is not accepted."""
    url = _http_url(properties["url"]).copy_merge_params(properties.get("query") or {})
    method = properties["method"]
    timeout_s = seconds(properties["timeout"], "timeout")
    interval_s = seconds(properties["retryInterval"], "retryInterval")
    attempts = 1 + properties["retries"]
    send = _request_arguments(properties)
    async with httpx.AsyncClient(verify=_tls(), timeout=timeout_s, follow_redirects=properties["followRedirects"]) as client:
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status, headers, content, charset = await _exchange(client, method, url, send)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                if attempt == attempts:
                    raise TaskFailed("ConnectError", f"{method} {url}: cannot connect: {error}") from None
                await _wait_to_retry(ctx, attempt, attempts, f"cannot connect: {error}", interval_s)
                continue
            except (TimeoutError, httpx.TimeoutException):
                raise TaskFailed("Timeout", f"{method} {url}: no complete answer within {timeout_s:g} s") from None
            except httpx.HTTPError as error:
                raise TaskFailed("HttpError", f"{method} {url}: {type(error).__name__}: {error}") from None
            ctx.log(f"{method} {url}: {status} ({(time.perf_counter() - started) * 1000:.0f} ms)")
            accepted = _accepted(status, properties)
            if status >= 500 and not accepted and attempt < attempts:
                await _wait_to_retry(ctx, attempt, attempts, f"status {status}", interval_s)
                continue
            break
    body = _decode(content, headers.get("content-type", ""), charset)
    if not accepted:
        quoted = _text(content[:QUOTED], charset).strip()
        name = "UnexpectedStatus" if "expectStatus" in properties else "HttpStatus"
        raise TaskFailed(name, f"{method} {url} answered {status}" + (f": {quoted}" if quoted else ""))
    return {"status": status, "headers": headers, "body": body}


def _http_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise TaskFailed("InvalidUrl", f"properties.url: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TaskFailed("InvalidUrl", "properties.url: only http:// and https:// URLs with a host are allowed")
    return parsed


def _request_arguments(properties: dict[str, Any]) -> dict[str, Any]:
    """httpx's keyword arguments for the body, headers, query and auth of the request."""
    headers = dict(properties.get("headers") or {})
    send: dict[str, Any] = {"headers": headers}
    if "json" in properties:  # encoded here: httpx reads `json=None` as no body, and null is a JSON body
        send["content"] = json.dumps(properties["json"], ensure_ascii=False, separators=(",", ":")).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in properties:
        send["content"] = properties["body"].encode()
    elif "form" in properties:
        send["data"] = properties["form"]
    auth = properties.get("auth")
    if auth and auth["type"] == "basic":
        send["auth"] = httpx.BasicAuth(auth["username"], auth["password"])
    elif auth and auth["type"] == "bearer":
        headers["Authorization"] = f"Bearer {auth['token']}"
    return send


async def _exchange(
    client: httpx.AsyncClient, method: str, url: httpx.URL, send: dict[str, Any]
) -> tuple[int, dict[str, str], bytes, str | None]:
    """(status, headers, body, charset) of one exchange, the body read up to MAX_BODY_BYTES."""
    async with client.stream(method, url, **send) as response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TaskFailed("ResponseTooLarge", f"{method} {url}: the answer is over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return response.status_code, dict(response.headers.items()), b"".join(chunks), response.charset_encoding


def _accepted(status: int, properties: dict[str, Any]) -> bool:
    expected = properties.get("expectStatus")
    if expected is not None:
        return status in (expected if isinstance(expected, list) else [expected])
    return status < 400 or properties["allowFailedStatus"]


async def _wait_to_retry(ctx: TaskContext, attempt: int, attempts: int, why: str, interval_s: float) -> None:
    wait = min(interval_s * 2 ** (attempt - 1), MAX_RETRY_INTERVAL_S)
    ctx.log(f"attempt {attempt} of {attempts}: {why}; trying again in {wait:g} s")
    try:
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=wait)
    except asyncio.TimeoutError:
        return
    raise TaskFailed("Cancelled", "the execution was cancelled while waiting to retry")


def _decode(content: bytes, content_type: str, charset: str | None) -> Any:
    """The body as JSON when the content type says JSON (application/json, ...+json), else text."""
    media = content_type.split(";", 1)[0].strip().lower()
    if content and (media == "application/json" or media.endswith("+json")):
        try:
            return json.loads(content)
        except ValueError:
            pass  # a server that says JSON and sends something else: its text
    return _text(content, charset)


def _text(content: bytes, charset: str | None) -> str:
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


_SCALAR = {"type": ["string", "number", "boolean"]}
_AUTH = {"oneOf": [
    obj({"type": {"const": "basic"}, "username": {"type": "string"}, "password": {"type": "string"}},
        ["type", "username", "password"]),
    obj({"type": {"const": "bearer"}, "token": {"type": "string"}}, ["type", "token"]),
], "description": "basic {username, password} or bearer {token}"}
_STATUS = {"type": "integer", "minimum": 100, "maximum": 599}
_ONE_BODY = {"not": {}, "description": "one body at most: json, body or form"}

INPUT_SCHEMA = obj(
    {
        "url": text("an http:// or https:// URL", minLength=1),
        "method": {"enum": list(METHODS), "default": "GET"},
        "headers": string_map("request headers"),
        "query": {"type": "object", "additionalProperties": _SCALAR, "description": "query parameters to add"},
        "json": anything("a JSON body (sets Content-Type: application/json)"),
        "body": text("a raw text body"),
        "form": {"type": "object", "additionalProperties": _SCALAR,
                 "description": "a form body (application/x-www-form-urlencoded)"},
        "auth": _AUTH,
        "timeout": duration_schema("the deadline of the whole exchange", "30s"),
        "retries": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0,
                    "description": "how many more times to try after a connect error or a 5xx answer"},
        "retryInterval": duration_schema("the first wait before trying again (then doubled)", "1s"),
        "followRedirects": {"type": "boolean", "default": True},
        "expectStatus": {"oneOf": [_STATUS, {"type": "array", "items": _STATUS, "minItems": 1}],
                         "description": "the accepted status(es); any other fails the task"},
        "allowFailedStatus": {"type": "boolean", "default": False,
                              "description": "a status of 400 or more is an output, not a failure"},
    },
    ["url"],
    dependentSchemas={"json": {"properties": {"body": _ONE_BODY, "form": _ONE_BODY}},
                      "body": {"properties": {"form": _ONE_BODY}}},
)

PLUGINS = [
    Plugin(Manifest(
        id="http.request", name="HTTP request", category="http",
        description="Send an HTTP(S) request; the answer's status, headers and body (JSON when it says JSON, else "
                    "text). A status of 400 or more fails the task unless allowFailedStatus or expectStatus says so.",
        input_schema=INPUT_SCHEMA,
        output_schema=obj({"status": {"type": "integer"}, "headers": string_map("the answer's headers, lowercase names"),
                           "body": anything("JSON or text")}, ["status", "headers", "body"]),
    ), request),
]
