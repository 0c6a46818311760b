"""Route request authentication: HMAC presets, API keys, Basic, and the auth config checks.

Expected signatures are computed here with hmac/hashlib, never with the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from app.errors import BadRequest
from app.security.signatures import (
    SECRET_FIELDS,
    Refused,
    public_view,
    validate_auth,
    verify_api_key,
    verify_basic,
    verify_hmac,
)

NOW = 1_700_000_000
SECRET = "whsec_test_secret"
BODY = b'{"id": "evt_1", "amount": 1200}\n'


def hexmac(message: bytes, secret: str = SECRET, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, getattr(hashlib, algorithm)).hexdigest()


def flip(data: bytes, index: int = 0) -> bytes:
    """`data` with one byte changed."""
    changed = bytearray(data)
    changed[index] ^= 1
    return bytes(changed)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value.reason


# --- GitHub -------------------------------------------------------------------------------

GITHUB = {"kind": "hmac", "preset": "github", "secret": "It's a Secret to Everybody"}
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_published_example_is_accepted() -> None:
    # The published value really is HMAC-SHA256(secret, body): checked independently.
    assert "sha256=" + hexmac(GITHUB_BODY, GITHUB["secret"]) == GITHUB_SIGNATURE
    assert verify_hmac(GITHUB, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE}) is None


def test_github_changed_body_byte_is_refused() -> None:
    refused(verify_hmac, GITHUB, flip(GITHUB_BODY, 5), {"x-hub-signature-256": GITHUB_SIGNATURE})
    refused(verify_hmac, GITHUB, GITHUB_BODY + b"\n", {"x-hub-signature-256": GITHUB_SIGNATURE})


def test_github_changed_signature_is_refused() -> None:
    last = "0" if GITHUB_SIGNATURE[-1] != "0" else "1"
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE[:-1] + last})
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE[:-1]})


def test_github_missing_header_or_other_scheme_is_refused() -> None:
    refused(verify_hmac, GITHUB, GITHUB_BODY, {})
    sha1 = "sha1=" + hexmac(GITHUB_BODY, GITHUB["secret"], "sha1")
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature-256": sha1})
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature": sha1})  # the legacy header is not enough
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE.removeprefix("sha256=")})


def test_github_wrong_secret_is_refused_and_non_ascii_does_not_crash() -> None:
    refused(verify_hmac, {**GITHUB, "secret": "another"}, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE})
    refused(verify_hmac, GITHUB, GITHUB_BODY, {"x-hub-signature-256": "sha256=ü" + GITHUB_SIGNATURE[8:]})


def test_an_empty_secret_or_unknown_preset_fails_closed() -> None:
    empty = "sha256=" + hexmac(GITHUB_BODY, "")
    refused(verify_hmac, {**GITHUB, "secret": ""}, GITHUB_BODY, {"x-hub-signature-256": empty})
    refused(verify_hmac, {**GITHUB, "preset": "gitlab"}, GITHUB_BODY, {"x-hub-signature-256": GITHUB_SIGNATURE})


# --- Stripe -------------------------------------------------------------------------------

STRIPE = {"kind": "hmac", "preset": "stripe", "secret": SECRET}


def stripe_v1(stamp: int | str, body: bytes = BODY, secret: str = SECRET) -> str:
    return hexmac(f"{stamp}.".encode() + body, secret)


def stripe(header: str, body: bytes = BODY, now: float = NOW, config: dict[str, Any] = STRIPE) -> None:
    verify_hmac(config, body, {"stripe-signature": header}, now=now)


def test_stripe_valid_within_tolerance() -> None:
    stripe(f"t={NOW},v1={stripe_v1(NOW)}")
    stripe(f"t={NOW - 299},v1={stripe_v1(NOW - 299)}")
    stripe(f"t={NOW + 300},v1={stripe_v1(NOW + 300)}")
    stripe(f"t={NOW}, v1={stripe_v1(NOW)}, v0=6ffbb59b2300aae63f27240606", now=NOW + 10)


def test_stripe_accepts_any_matching_v1() -> None:
    other = stripe_v1(NOW, secret="whsec_old")
    stripe(f"t={NOW},v1={other},v1={stripe_v1(NOW)},v0={other}")
    stripe(f"t={NOW},v1={stripe_v1(NOW)},v1={other}")
    refused(stripe, f"t={NOW},v1={other},v1={other}")


def test_stripe_outside_tolerance_is_refused_past_and_future() -> None:
    refused(stripe, f"t={NOW - 301},v1={stripe_v1(NOW - 301)}")
    refused(stripe, f"t={NOW + 301},v1={stripe_v1(NOW + 301)}")
    wide = {**STRIPE, "toleranceS": 3600}
    stripe(f"t={NOW - 3000},v1={stripe_v1(NOW - 3000)}", config=wide)
    refused(stripe, f"t={NOW - 3601},v1={stripe_v1(NOW - 3601)}", config=wide)


def test_stripe_uses_the_clock_when_now_is_not_given() -> None:
    config = {**STRIPE}
    refused(verify_hmac, config, BODY, {"stripe-signature": f"t={NOW},v1={stripe_v1(NOW)}"})  # 2023 is long past


def test_stripe_signature_binds_timestamp_and_body() -> None:
    refused(stripe, f"t={NOW},v1={stripe_v1(NOW - 1)}")
    refused(stripe, f"t={NOW},v1={stripe_v1(NOW)}", body=flip(BODY))
    refused(stripe, f"t={NOW},v1={hexmac(BODY)}")


@pytest.mark.parametrize("header", [
    f"v1={stripe_v1(NOW)}",                                   # no t
    f"t=,v1={stripe_v1('')}",                                 # empty t
    f"t={NOW}.5,v1={stripe_v1(f'{NOW}.5')}",                  # t not an integer
    f"t=abc,v1={stripe_v1('abc')}",
    f"t=-{NOW},v1={stripe_v1(f'-{NOW}')}",
    f"t={NOW},t={NOW},v1={stripe_v1(NOW)}",                   # two t
    f"t={NOW}",                                               # no v1
    f"t={NOW},v0={stripe_v1(NOW)}",                           # only v0
    f"t={NOW},v1{stripe_v1(NOW)}",                            # malformed item
    f"t={NOW};v1={stripe_v1(NOW)}",
    "",
    "garbage",
])
def test_stripe_malformed_header_is_refused(header: str) -> None:
    refused(stripe, header)


def test_stripe_missing_header_is_refused() -> None:
    refused(verify_hmac, STRIPE, BODY, {}, now=NOW)


# --- Slack --------------------------------------------------------------------------------

SLACK = {"kind": "hmac", "preset": "slack", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}
SLACK_BODY = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather&text=94070"


def slack_headers(stamp: int | str, version: str = "v0", body: bytes = SLACK_BODY) -> dict[str, str]:
    signature = hexmac(b"v0:" + str(stamp).encode() + b":" + body, SLACK["secret"])
    return {"x-slack-signature": f"{version}={signature}", "x-slack-request-timestamp": str(stamp)}


def test_slack_valid() -> None:
    verify_hmac(SLACK, SLACK_BODY, slack_headers(NOW), now=NOW + 60)
    verify_hmac(SLACK, SLACK_BODY, slack_headers(NOW), now=NOW - 60)


def test_slack_stale_or_future_timestamp_is_refused() -> None:
    refused(verify_hmac, SLACK, SLACK_BODY, slack_headers(NOW - 301), now=NOW)
    refused(verify_hmac, SLACK, SLACK_BODY, slack_headers(NOW + 301), now=NOW)
    verify_hmac({**SLACK, "toleranceS": 600}, SLACK_BODY, slack_headers(NOW - 500), now=NOW)


def test_slack_wrong_version_prefix_is_refused() -> None:
    refused(verify_hmac, SLACK, SLACK_BODY, slack_headers(NOW, version="v1"), now=NOW)
    headers = slack_headers(NOW)
    headers["x-slack-signature"] = headers["x-slack-signature"].removeprefix("v0=")
    refused(verify_hmac, SLACK, SLACK_BODY, headers, now=NOW)


def test_slack_tampering_and_missing_headers_are_refused() -> None:
    refused(verify_hmac, SLACK, flip(SLACK_BODY), slack_headers(NOW), now=NOW)
    swapped = {**slack_headers(NOW), "x-slack-request-timestamp": str(NOW + 1)}
    refused(verify_hmac, SLACK, SLACK_BODY, swapped, now=NOW)
    for missing in ("x-slack-signature", "x-slack-request-timestamp"):
        headers = slack_headers(NOW)
        del headers[missing]
        refused(verify_hmac, SLACK, SLACK_BODY, headers, now=NOW)
    refused(verify_hmac, SLACK, SLACK_BODY, slack_headers("soon"), now=NOW)


# --- generic ------------------------------------------------------------------------------

GENERIC = {"kind": "hmac", "preset": "generic", "secret": SECRET}


def digest(algorithm: str = "sha256", body: bytes = BODY) -> bytes:
    return hmac.new(SECRET.encode(), body, getattr(hashlib, algorithm)).digest()


def test_generic_hex_default_header_and_algorithm() -> None:
    verify_hmac(GENERIC, BODY, {"x-signature": digest().hex()})
    refused(verify_hmac, GENERIC, flip(BODY), {"x-signature": digest().hex()})
    refused(verify_hmac, GENERIC, BODY, {})


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_generic_algorithms(algorithm: str) -> None:
    config = {**GENERIC, "algorithm": algorithm}
    verify_hmac(config, BODY, {"x-signature": digest(algorithm).hex()})
    other = "sha512" if algorithm != "sha512" else "sha1"
    refused(verify_hmac, config, BODY, {"x-signature": digest(other).hex()})


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_generic_base64(algorithm: str) -> None:
    config = {**GENERIC, "algorithm": algorithm, "encoding": "base64"}
    encoded = base64.b64encode(digest(algorithm)).decode()
    verify_hmac(config, BODY, {"x-signature": encoded})
    verify_hmac(config, BODY, {"x-signature": encoded.rstrip("=")})  # padding left off
    verify_hmac(config, BODY, {"x-signature": f"{algorithm}={encoded}"})
    refused(verify_hmac, config, BODY, {"x-signature": digest(algorithm).hex()})
    refused(verify_hmac, config, BODY, {"x-signature": "not base64!"})
    refused(verify_hmac, config, flip(BODY), {"x-signature": encoded})


def test_generic_custom_header() -> None:
    config = {**GENERIC, "header": "X-Webhook-Signature"}
    verify_hmac(config, BODY, {"x-webhook-signature": digest().hex()})
    refused(verify_hmac, config, BODY, {"x-signature": digest().hex()})


def test_generic_prefix_is_stripped_only_for_the_configured_algorithm() -> None:
    verify_hmac(GENERIC, BODY, {"x-signature": "sha256=" + digest().hex()})
    verify_hmac(GENERIC, BODY, {"x-signature": "SHA256=" + digest().hex()})
    refused(verify_hmac, GENERIC, BODY, {"x-signature": "sha1=" + digest().hex()})
    refused(verify_hmac, {**GENERIC, "algorithm": "sha1"}, BODY, {"x-signature": "sha256=" + digest("sha1").hex()})


def test_generic_hex_is_case_insensitive() -> None:
    verify_hmac(GENERIC, BODY, {"x-signature": digest().hex().upper()})
    verify_hmac(GENERIC, BODY, {"x-signature": "sha256=" + digest().hex().upper()})
    refused(verify_hmac, GENERIC, BODY, {"x-signature": flip(digest()).hex().upper()})


# --- API key and Basic --------------------------------------------------------------------

API_KEY = {"kind": "api_key", "header": "X-API-Key", "key": "k3y-Secret"}
BASIC = {"kind": "basic", "username": "alice", "password": "pa:ss word"}


def basic(credentials: bytes | str, scheme: str = "Basic") -> dict[str, str]:
    raw = credentials.encode() if isinstance(credentials, str) else credentials
    return {"authorization": f"{scheme} {base64.b64encode(raw).decode()}"}


def test_api_key() -> None:
    verify_api_key(API_KEY, {"x-api-key": "k3y-Secret"})
    refused(verify_api_key, API_KEY, {"x-api-key": "k3y-secret"})
    refused(verify_api_key, API_KEY, {"x-api-key": "k3y-Secret2"})
    refused(verify_api_key, API_KEY, {"x-api-key": ""})
    refused(verify_api_key, API_KEY, {"x-api-key": "ké"})
    refused(verify_api_key, API_KEY, {"authorization": "k3y-Secret"})
    refused(verify_api_key, API_KEY, {})
    refused(verify_api_key, {**API_KEY, "key": ""}, {"x-api-key": ""})


def test_basic_right_credentials() -> None:
    verify_basic(BASIC, basic("alice:pa:ss word"))  # the password may hold colons
    verify_basic(BASIC, basic("alice:pa:ss word", scheme="basic"))


@pytest.mark.parametrize("credentials", [
    "alice:wrong", "bob:pa:ss word", "bob:wrong", "alice:", ":pa:ss word", "alice:pa:ss word ", "Alice:pa:ss word",
])
def test_basic_wrong_user_or_password(credentials: str) -> None:
    refused(verify_basic, BASIC, basic(credentials))


@pytest.mark.parametrize("headers", [
    {},
    {"authorization": "Basic"},
    {"authorization": "Basic !!!not-base64!!!"},
    {"authorization": "Basic YWxpY2U6cGE6c3Mgd29yZA"},       # padding missing
    {"authorization": "Basic " + base64.b64encode(b"alice").decode()},  # no colon
    {"authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},  # not UTF-8
    {"authorization": "Basic ü"},
    {"authorization": "Bearer " + base64.b64encode(b"alice:pa:ss word").decode()},
])
def test_basic_malformed_or_missing_header(headers: dict[str, str]) -> None:
    refused(verify_basic, BASIC, headers)


def test_basic_unicode_credentials() -> None:
    config = {"kind": "basic", "username": "zoë", "password": "пароль"}
    verify_basic(config, basic("zoë:пароль".encode()))
    refused(verify_basic, config, basic("zoe:пароль"))


# --- validate_auth and public_view --------------------------------------------------------

@pytest.mark.parametrize("config, normalised", [
    ({"kind": "none"}, {"kind": "none"}),
    ({"kind": "jwt"}, {"kind": "jwt"}),
    (API_KEY, API_KEY),
    (BASIC, BASIC),
    ({"kind": "custom", "script": "f/auth/check"}, {"kind": "custom", "script": "f/auth/check"}),
    (GITHUB, GITHUB),
    ({**GITHUB, "header": "X-Hub-Signature-256", "algorithm": "sha256", "encoding": "hex"}, GITHUB),
    ({**GITHUB, "toleranceS": 60}, GITHUB),
    (STRIPE, {**STRIPE, "toleranceS": 300}),
    ({**SLACK, "toleranceS": 86400}, {**SLACK, "toleranceS": 86400}),
    (GENERIC, {**GENERIC, "header": "X-Signature", "algorithm": "sha256", "encoding": "hex"}),
    ({**GENERIC, "header": "X-Sig", "algorithm": "sha512", "encoding": "base64"},
     {**GENERIC, "header": "X-Sig", "algorithm": "sha512", "encoding": "base64"}),
])
def test_validate_auth_normalises(config: dict[str, Any], normalised: dict[str, Any]) -> None:
    before = dict(config)
    assert validate_auth(config) == normalised
    assert config == before  # the input is left alone


@pytest.mark.parametrize("config, field", [
    (None, "auth"),
    ("none", "auth"),
    ({}, "auth.kind"),
    ({"kind": "oauth"}, "auth.kind"),
    ({"kind": ["none"]}, "auth.kind"),
    ({"kind": "none", "key": "x"}, "auth.key"),
    ({"kind": "jwt", "extra": 1}, "auth.extra"),
    ({"kind": "api_key", "key": "k"}, "auth.header"),
    ({"kind": "api_key", "header": "", "key": "k"}, "auth.header"),
    ({"kind": "api_key", "header": "X API Key", "key": "k"}, "auth.header"),
    ({"kind": "api_key", "header": "X-Key:", "key": "k"}, "auth.header"),
    ({"kind": "api_key", "header": "X-Key"}, "auth.key"),
    ({"kind": "api_key", "header": "X-Key", "key": ""}, "auth.key"),
    ({"kind": "api_key", "header": "X-Key", "key": 123}, "auth.key"),
    ({"kind": "api_key", "header": "X-Key", "key": " k "}, "auth.key"),
    ({"kind": "api_key", "header": "X-Key", "key": "k", "password": "p"}, "auth.password"),
    ({"kind": "basic", "password": "p"}, "auth.username"),
    ({"kind": "basic", "username": "a:b", "password": "p"}, "auth.username"),
    ({"kind": "basic", "username": "a"}, "auth.password"),
    ({"kind": "basic", "username": "a", "password": ""}, "auth.password"),
    ({"kind": "custom"}, "auth.script"),
    ({"kind": "custom", "script": "  "}, "auth.script"),
    ({"kind": "custom", "script": ["f/x"]}, "auth.script"),
    ({"kind": "hmac", "secret": "s"}, "auth.preset"),
    ({"kind": "hmac", "preset": "gitlab", "secret": "s"}, "auth.preset"),
    ({"kind": "hmac", "preset": "github"}, "auth.secret"),
    ({"kind": "hmac", "preset": "github", "secret": ""}, "auth.secret"),
    ({**GENERIC, "algorithm": "md5"}, "auth.algorithm"),
    ({**GENERIC, "algorithm": "SHA256"}, "auth.algorithm"),
    ({**GENERIC, "encoding": "base32"}, "auth.encoding"),
    ({**GENERIC, "header": "bad header"}, "auth.header"),
    ({**GENERIC, "header": None}, "auth.header"),
    ({**STRIPE, "toleranceS": 0}, "auth.toleranceS"),
    ({**STRIPE, "toleranceS": -5}, "auth.toleranceS"),
    ({**STRIPE, "toleranceS": 86401}, "auth.toleranceS"),
    ({**STRIPE, "toleranceS": 30.5}, "auth.toleranceS"),
    ({**STRIPE, "toleranceS": "300"}, "auth.toleranceS"),
    ({**STRIPE, "toleranceS": True}, "auth.toleranceS"),
    ({**GITHUB, "algorithm": "sha1"}, "auth.algorithm"),
    ({**GITHUB, "header": "X-Signature"}, "auth.header"),
    ({**STRIPE, "encoding": "base64"}, "auth.encoding"),
    ({**SLACK, "unknown": 1}, "auth.unknown"),
])
def test_validate_auth_rejects(config: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_auth(config)
    assert caught.value.status == 400
    assert caught.value.details == {"field": field}
    assert caught.value.message.startswith(field + " ")


def test_validate_auth_errors_do_not_echo_secrets() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_auth({**GENERIC, "secret": "hunter2-very-secret", "algorithm": "md5"})
    assert "hunter2" not in caught.value.message


def test_public_view_strips_secrets() -> None:
    assert SECRET_FIELDS == {"api_key": ("key",), "basic": ("password",), "hmac": ("secret",)}
    assert public_view(API_KEY) == {"kind": "api_key", "header": "X-API-Key"}
    assert public_view(BASIC) == {"kind": "basic", "username": "alice"}
    assert public_view({**STRIPE, "toleranceS": 300}) == {"kind": "hmac", "preset": "stripe", "toleranceS": 300}
    assert public_view({"kind": "custom", "script": "f/auth/check"}) == {"kind": "custom", "script": "f/auth/check"}
    assert public_view({"kind": "none"}) == {"kind": "none"}
    assert "secret" in GITHUB  # the input is left alone
