"""Is an HTTP route request authentic? HMAC signatures (GitHub, Stripe, Slack, generic), API
keys and Basic credentials, plus the checks a route's `auth` config passes before it is saved.

Pure functions: no HTTP framework, no database. Header names arrive lower-cased. Every secret
comparison is constant time and every signature is computed over the exact raw body bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from app.errors import BadRequest

KINDS = ("none", "api_key", "basic", "jwt", "hmac", "custom")
PRESETS = ("github", "stripe", "slack", "generic")
ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
DEFAULT_TOLERANCE_S = 300  # Stripe's and Slack's own recommendation
MAX_TOLERANCE_S = 86400
GENERIC_HEADER = "X-Signature"

# What the route layer encrypts at rest and never returns.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {"api_key": ("key",), "basic": ("password",), "hmac": ("secret",)}

_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (), "jwt": (), "api_key": ("header", "key"), "basic": ("username", "password"),
    "hmac": ("preset", "secret", "header", "algorithm", "encoding", "toleranceS"), "custom": ("script",),
}
# The presets other than generic fix these; a config may restate them but not change them.
_PRESET_HEADERS = {"github": "x-hub-signature-256", "stripe": "stripe-signature", "slack": "x-slack-signature"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: what a header name may be
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


# Headers that carry credentials whatever the route's scheme: never stored, never handed to a script.
ALWAYS_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def secret_headers(config: Mapping[str, Any]) -> frozenset[str]:
    """The (lower-case) headers a request to a route with `config` as its auth carries its
    secret or its proof of it in: left out of what is stored of the request and of what a
    script or preprocessor gets, with those that carry credentials on any route."""
    kind = config.get("kind")
    if kind == "api_key" and config.get("header"):
        return ALWAYS_SECRET_HEADERS | {str(config["header"]).lower()}
    if kind == "hmac":
        preset = config.get("preset")
        header = _PRESET_HEADERS.get(preset) or str(config.get("header") or GENERIC_HEADER).lower()
        extra = {"x-hub-signature"} if preset == "github" else set()  # GitHub's SHA-1 signature, sent beside it
        return ALWAYS_SECRET_HEADERS | {header} | extra
    return ALWAYS_SECRET_HEADERS


class Refused(Exception):
    """The request is not authentic. `reason` is for the logs only: the caller gets a bare 401,
    so that a forger learns nothing about which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_hmac(
    config: Mapping[str, Any], raw_body: bytes, headers: Mapping[str, str], now: float | None = None
) -> None:
    """Return when the request carries a valid signature for `config["preset"]`, else raise Refused."""
    secret = config.get("secret")
    if not isinstance(secret, str) or not secret:
        raise Refused("the route has no HMAC secret")  # fail closed rather than verify with an empty key
    key = secret.encode()
    tolerance = config.get("toleranceS", DEFAULT_TOLERANCE_S)
    preset = config.get("preset")
    if preset == "github":
        scheme, _, given = _header(headers, "x-hub-signature-256").partition("=")
        if scheme != "sha256":
            raise Refused("X-Hub-Signature-256 is not sha256=")
        _expect(_equal(_mac(key, raw_body).hex(), given.lower()))
    elif preset == "stripe":
        _verify_stripe(key, raw_body, _header(headers, "stripe-signature"), tolerance, now)
    elif preset == "slack":
        stamp = _header(headers, "x-slack-request-timestamp")
        version, _, given = _header(headers, "x-slack-signature").partition("=")
        if version != "v0":
            raise Refused("X-Slack-Signature is not v0=")
        _check_age(stamp, tolerance, now)
        _expect(_equal(_mac(key, b"v0:" + stamp.encode() + b":" + raw_body).hex(), given.lower()))
    elif preset == "generic":
        _verify_generic(config, key, raw_body, headers)
    else:
        raise Refused(f"unknown HMAC preset {preset!r}")


def _verify_stripe(key: bytes, body: bytes, header: str, tolerance: int, now: float | None) -> None:
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise Refused("malformed Stripe-Signature")
        fields.setdefault(name, []).append(value)
    stamps, candidates = fields.get("t", []), fields.get("v1", [])
    if len(stamps) != 1 or not candidates:
        raise Refused("Stripe-Signature needs one t and at least one v1")
    _check_age(stamps[0], tolerance, now)
    # Stripe signs the timestamp exactly as sent; several v1 values appear while a secret rolls.
    expected = _mac(key, f"{stamps[0]}.".encode() + body).hex()
    matched = False
    for candidate in candidates:
        matched |= _equal(expected, candidate.lower())
    _expect(matched)


def _verify_generic(config: Mapping[str, Any], key: bytes, body: bytes, headers: Mapping[str, str]) -> None:
    algorithm, encoding = config.get("algorithm", "sha256"), config.get("encoding", "hex")
    if algorithm not in ALGORITHMS or encoding not in ENCODINGS:
        raise Refused("the route's generic HMAC config is invalid")
    value = _header(headers, config.get("header") or GENERIC_HEADER)
    prefix = f"{algorithm}="
    if value[: len(prefix)].lower() == prefix:
        value = value[len(prefix):]
    digest = _mac(key, body, algorithm)
    if encoding == "hex":
        _expect(_equal(digest.hex(), value.lower()))
        return
    try:  # senders differ on padding, so restore it rather than refuse its absence
        given = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Refused("signature is not base64") from None
    _expect(hmac.compare_digest(digest, given))


def verify_api_key(config: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Return when the configured header carries the configured key, else raise Refused."""
    name, key = config.get("header"), config.get("key")
    if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
        raise Refused("the route's API key config is invalid")
    _expect(_equal_secret(key, _header(headers, name)))


def verify_basic(config: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Return when `Authorization: Basic ...` names the configured user and password, else raise Refused."""
    username, password = config.get("username"), config.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise Refused("the route's basic auth config is invalid")
    scheme, _, token = _header(headers, "authorization").partition(" ")
    if scheme.lower() != "basic":
        raise Refused("Authorization is not Basic")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise Refused("Authorization is not valid base64 UTF-8") from None
    given_user, colon, given_password = decoded.partition(":")
    if not colon:
        raise Refused("Authorization has no colon")
    # Both parts are always compared, and `&` never short-circuits: timing must not tell which was wrong.
    user_ok = _equal_secret(username, given_user)
    password_ok = _equal_secret(password, given_password)
    _expect(user_ok & password_ok)


def validate_auth(config: Any) -> dict[str, Any]:
    """A submitted route `auth` config, checked and normalised (defaults filled in); BadRequest names the bad field."""
    if not isinstance(config, dict):
        _bad("auth", "must be an object")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        _bad("auth.kind", f"must be one of {', '.join(KINDS)}")
    for name in config:
        if name != "kind" and name not in _FIELDS[kind]:
            _bad(f"auth.{name}", f"is not a field of {kind} auth")
    out: dict[str, Any] = {"kind": kind}
    if kind == "api_key":
        out["header"] = _header_name(config.get("header"))
        out["key"] = _text(config, "key")
        if out["key"] != out["key"].strip():
            _bad("auth.key", "must not start or end with whitespace (HTTP strips it from headers)")
    elif kind == "basic":
        out["username"] = _text(config, "username")
        if ":" in out["username"]:
            _bad("auth.username", "must not contain a colon")
        out["password"] = _text(config, "password")
    elif kind == "custom":
        out["script"] = _text(config, "script")
    elif kind == "hmac":
        out.update(_validate_hmac(config))
    return out


def _validate_hmac(config: dict[str, Any]) -> dict[str, Any]:
    preset = config.get("preset")
    if preset not in PRESETS:
        _bad("auth.preset", f"must be one of {', '.join(PRESETS)}")
    out: dict[str, Any] = {"preset": preset, "secret": _text(config, "secret")}
    chosen = {
        "header": _header_name(config.get("header", GENERIC_HEADER)),
        "algorithm": _choice(config, "algorithm", ALGORITHMS, "sha256"),
        "encoding": _choice(config, "encoding", ENCODINGS, "hex"),
    }
    tolerance = config.get("toleranceS", DEFAULT_TOLERANCE_S)
    if type(tolerance) is not int or not 0 < tolerance <= MAX_TOLERANCE_S:
        _bad("auth.toleranceS", f"must be a whole number of seconds from 1 to {MAX_TOLERANCE_S}")
    if preset == "generic":
        out.update(chosen)
    else:
        fixed = {"header": _PRESET_HEADERS[preset], "algorithm": "sha256", "encoding": "hex"}
        for name, value in fixed.items():
            if name in config and chosen[name].lower() != value:
                _bad(f"auth.{name}", f"is fixed by the {preset} preset ({value})")
    if preset in ("stripe", "slack"):  # only these sign a timestamp
        out["toleranceS"] = tolerance
    return out


def public_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without its secret fields, for API answers."""
    hidden = SECRET_FIELDS.get(str(config.get("kind")), ())
    return {name: value for name, value in config.items() if name not in hidden}


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if value is None:
        raise Refused(f"no {name} header")
    return value.strip()


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, algorithm).digest()


def _check_age(stamp: str, tolerance: int, now: float | None) -> None:
    if not _TIMESTAMP.fullmatch(stamp):
        raise Refused("timestamp is not an integer")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise Refused("timestamp outside tolerance")  # a replay, or a clock far off


def _equal(expected: str, given: str) -> bool:
    # compare_digest raises on non-ASCII str; as bytes, such input simply fails to match.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def _equal_secret(expected: str, given: str) -> bool:
    # compare_digest still leaks the length; hashing first keeps a key's length secret too.
    digest = hashlib.sha256
    return hmac.compare_digest(digest(expected.encode()).digest(), digest(given.encode("utf-8", "replace")).digest())


def _expect(ok: bool) -> None:
    if not ok:
        raise Refused("signature or credentials do not match")


def _text(config: Mapping[str, Any], name: str) -> str:
    value = config.get(name)
    if not isinstance(value, str) or not value.strip():
        _bad(f"auth.{name}", "is required and must be a non-empty string")
    return value


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        _bad("auth.header", "must be a header name (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def _choice(config: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = config.get(name, default)
    if value not in allowed:
        _bad(f"auth.{name}", f"must be one of {', '.join(allowed)}")
    return str(value)


def _bad(field: str, message: str) -> NoReturn:
    raise BadRequest(f"{field} {message}", {"field": field})
