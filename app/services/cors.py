"""A route's CORS settings: which other origins' pages may call it from a browser, and how.

Checked when a route is saved, and worked out once per route when the route table is built
(`CorsPolicy`): serving a request is then a set lookup and a dict copy. An allowed origin is
echoed back (with `Vary: Origin`), never `*`, so credentials and caches stay right; `*`
allows any origin and is refused with `allowCredentials`, which would hand every site on the
web a visitor's cookies for this route.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any

import msgspec

from app.errors import BadRequest

MAX_ITEMS = 32
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
Text = Annotated[str, msgspec.Meta(max_length=255)]


class Cors(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`cors` of a route, as submitted and shown."""

    allow_origins: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
    allow_methods: Annotated[list[Text], msgspec.Meta(max_length=MAX_ITEMS)] | None = None  # default: the route's
    allow_headers: Annotated[list[Text], msgspec.Meta(max_length=MAX_ITEMS)] | None = None  # default: those asked for
    expose_headers: Annotated[list[Text], msgspec.Meta(max_length=MAX_ITEMS)] | None = None
    allow_credentials: bool = False
    max_age_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None


def checked_cors(cors: Cors, method: str) -> dict[str, Any]:
    """The settings as stored (origins lower-cased, methods upper-cased); BadRequest naming
    what is wrong."""
    origins = []
    for origin in cors.allow_origins:
        origin = origin.strip().lower().rstrip("/")
        if origin != "*" and not _ORIGIN.match(origin):
            raise BadRequest(f"cors.allowOrigins: {origin[:80]!r} is not an origin (scheme://host[:port], or *)")
        origins.append(origin)
    if "*" in origins and cors.allow_credentials:
        raise BadRequest("cors: allowOrigins * cannot go with allowCredentials: name the origins that may send credentials")
    methods = [m.upper() for m in cors.allow_methods] if cors.allow_methods is not None else [method]
    for m in methods:
        if m not in _METHODS:
            raise BadRequest(f"cors.allowMethods: {m[:20]!r} is not one of {', '.join(_METHODS)}")
    for field, names in (("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for name in names or ():
            if not _TOKEN.match(name):
                raise BadRequest(f"cors.{field}: {name[:80]!r} is not a header name")
    stored = msgspec.to_builtins(cors)
    stored.update(allowOrigins=list(dict.fromkeys(origins)), allowMethods=list(dict.fromkeys(methods)))
    return {k: v for k, v in stored.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class CorsPolicy:
    """A route's CORS settings, worked out for serving."""

    any_origin: bool
    origins: frozenset[str]
    methods: frozenset[str]
    answer_headers: dict[str, str]  # on every answer to an allowed origin, beside the origin itself
    preflight_headers: dict[str, str]  # on a preflight's answer; Allow-Headers echoes the request's when unset
    allow_headers: str | None

    @classmethod
    def of(cls, stored: dict[str, Any]) -> CorsPolicy:
        answer = {"vary": "Origin"}
        if stored.get("allowCredentials"):
            answer["access-control-allow-credentials"] = "true"
        if stored.get("exposeHeaders"):
            answer["access-control-expose-headers"] = ", ".join(stored["exposeHeaders"])
        preflight = {**answer, "access-control-allow-methods": ", ".join(stored["allowMethods"])}
        preflight.pop("access-control-expose-headers", None)  # for actual answers only
        if stored.get("maxAgeS") is not None:
            preflight["access-control-max-age"] = str(stored["maxAgeS"])
        headers = stored.get("allowHeaders")
        return cls(
            "*" in stored["allowOrigins"], frozenset(stored["allowOrigins"]), frozenset(stored["allowMethods"]),
            answer, preflight, ", ".join(headers) if headers is not None else None,
        )

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin.lower() in self.origins)

    def headers_for(self, origin: str) -> dict[str, str]:
        """What an actual answer to an allowed `origin` carries."""
        return {**self.answer_headers, "access-control-allow-origin": origin}

    def preflight(self, origin: str, method: str, asked_headers: str | None) -> dict[str, str] | None:
        """The headers of a preflight's answer, or None when it is not allowed."""
        if not self.allows(origin) or method not in self.methods:
            return None
        headers = {**self.preflight_headers, "access-control-allow-origin": origin}
        allowed = self.allow_headers if self.allow_headers is not None else asked_headers
        if allowed:
            headers["access-control-allow-headers"] = allowed
        return headers
