"""What a sync route answers: the run's result as JSON, or as the run says.

A result that is a JSON object holding `flowmill_status_code`, `flowmill_content_type`,
`flowmill_headers` or `flowmill_content_transfer_encoding` (or Windmill's `wm_...` and
`windmill_...` names: `app/runtimes/response.py`) is a *response object*: its `result` key is
the body, the rest sets the answer. A string body with a content type is served as that text,
raw; with `content_transfer_encoding: base64` it is base64 text of bytes, served as the bytes
(`application/octet-stream` unless a content type is given). Without `result` the answer has
no body (204 unless a status is given).

What a run sets is checked as the server's own answer would be: a status outside 200..599
(1xx are interim answers, never a final one), a header that is not a valid name and value (a
CR or LF would inject headers), one the server owns (framing and connection headers, its
request and job ids), or a bad content type or encoding is the run's mistake, not the
caller's: a 502 `invalid_response` naming it, with the run's id. `Set-Cookie` may be set.

A body whose type the run chose is served under the same sandbox as an uploaded site: it is
the script author's content on the API's own origin.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec
from litestar import Response

from app.api.v1.jobs import result_response
from app.engine.executor import Outcome
from app.errors import FlowmillError
from app.runtimes.response import ALL_NAMES, BASE64, BODY, NAMES

# A cheap look before decoding: only a result whose text names a setting can be a response object.
_MENTIONS = re.compile(r'"(?:flowmill|wm|windmill)_(?:status_code|content_type|headers|content_transfer_encoding)"')
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]{0,8192}$")  # no CR, LF, NUL or other controls; Latin-1 only
_MEDIA_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[\t\x20-\x7e]*)?$")
MAX_HEADERS = 64
# Headers the server owns: how the body is framed and the connection kept, and its own ids.
SERVER_HEADERS = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "upgrade", "x-request-id", "x-job-id",
})
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
_NO_BODY = (204, 304)


class InvalidResponse(FlowmillError):
    """The run's result asks for an answer the server cannot give: a fault of the run (the
    upstream, as it were), not of the caller."""

    status = 502
    code = "invalid_response"


def route_answer(job_id: str, outcome: Outcome) -> Response[Any]:
    """A sync route's answer to a finished run: a failed run is a 422 (`run_failed`), a
    response object answers as it says, anything else is the result as JSON."""
    text = outcome.result
    if outcome.status != "SUCCESS" or not text or text[0] != "{" or _MENTIONS.search(text) is None:
        return result_response(job_id, outcome, 200)
    value = msgspec.json.decode(text)
    if not isinstance(value, dict) or ALL_NAMES.isdisjoint(value):  # the names were deeper inside
        return result_response(job_id, outcome, 200)
    return _answer(job_id, value)


def _setting(value: dict[str, Any], setting: str) -> tuple[str, Any]:
    for name in NAMES[setting]:
        if name in value:
            return name, value[name]
    return NAMES[setting][0], None


def _answer(job_id: str, value: dict[str, Any]) -> Response[bytes]:
    def invalid(message: str, name: str) -> InvalidResponse:
        return InvalidResponse(f"the run's result sets an invalid answer: {message}",
                               {"jobId": job_id, "field": name}, {"x-job-id": job_id})

    name, status = _setting(value, "status_code")
    if status is not None and (type(status) is not int or not 200 <= status <= 599):
        raise invalid(f"{name} must be an integer from 200 to 599, not {msgspec.json.encode(status).decode()[:40]}", name)
    headers: dict[str, str] = {}
    name, given = _setting(value, "headers")
    if given is not None:
        if not isinstance(given, dict) or len(given) > MAX_HEADERS:
            raise invalid(f"{name} must be an object of at most {MAX_HEADERS} headers (name: text)", name)
        for key, text in given.items():
            lower = key.lower()
            if not _TOKEN.match(key):
                raise invalid(f"{name}: {key[:60]!r} is not a header name", name)
            if not isinstance(text, str) or not _VALUE.match(text):
                raise invalid(f"{name}: the value of {key} must be text without control characters (CR, LF), "
                              "at most 8192 characters", name)
            if lower in SERVER_HEADERS:
                raise invalid(f"{name}: {key} is set by the server, not by a run", name)
            headers[lower] = text
    name, content_type = _setting(value, "content_type")
    if content_type is None:
        content_type = headers.pop("content-type", None)
    else:
        headers.pop("content-type", None)
    if content_type is not None and (not isinstance(content_type, str) or len(content_type) > 255
                                     or not _MEDIA_TYPE.match(content_type)):
        raise invalid(f"{name} must be a media type such as text/html or text/csv; charset=utf-8", name)
    name, encoding = _setting(value, "content_transfer_encoding")
    has_body = BODY in value
    body = value.get(BODY)
    if encoding is not None:
        if encoding != BASE64:
            raise invalid(f"{name} is {BASE64!r} or not given", name)
        if not isinstance(body, str):
            raise invalid(f"with {name} the result must be base64 text", BODY)
        try:
            content = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("result is not valid base64 text", BODY) from None
        content_type = content_type or "application/octet-stream"
    elif not has_body:
        content = b""
    elif content_type is not None and isinstance(body, str):
        content = body.encode()  # text, raw: not a JSON string
    else:
        content = msgspec.json.encode(body)
    if content_type is not None:
        # The script author's content, on the API's origin: walled off as an uploaded site is.
        own = headers.get("content-security-policy")
        headers["content-security-policy"] = f"{own}, {SANDBOX}" if own else SANDBOX
        headers["x-content-type-options"] = "nosniff"
    if status is None:
        status = 200 if has_body else 204
    headers["x-job-id"] = job_id
    if status in _NO_BODY:
        return Response(b"", status_code=status, headers=headers)
    headers["content-type"] = content_type or "application/json"
    return Response(content, status_code=status, headers=headers)
