"""Session JWTs (HS256 only, with expiry) and API tokens (random, shown once, stored hashed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import msgspec

from app.errors import ConfigError
from app.ids import random_bytes

ALGORITHM = "HS256"
API_TOKEN_PREFIX = "fm_"


def _base64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_HEADER = _base64url(b'{"alg":"HS256","typ":"JWT"}')


def load_signing_key(home: Path) -> bytes:
    """The JWT signing key kept in `<home>/jwt.key` (0600), made on first start."""
    path = home / "jwt.key"
    if not path.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the JWT signing key {path}: {error}") from None
    if len(key) < 32:
        raise ConfigError(f"the JWT signing key {path} is too short")
    return key


class JwtCodec:
    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        # Signed URLs get a key of their own, derived from the JWT key, so that no signature
        # made for one purpose can ever pass as one made for the other.
        self._url_key = hmac.new(key, b"flowmill signed urls", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def issue(self, username: str, ttl_s: int | None = None, **extra: str) -> tuple[str, int]:
        """(token, expiry as epoch seconds). `extra` claims scope it, e.g. `job=<id>`."""
        now = int(time.time())
        exp = now + (ttl_s or self.ttl_s)
        claims = {"sub": username, "iat": now, "exp": exp, "jti": random_bytes(8).hex(), "iss": "flowmill", **extra}
        # Signed here rather than by PyJWT (which `verify` uses): every run gets a token, and
        # PyJWT's checks of the key on each call cost more than the signature.
        signing_input = _HEADER + b"." + _base64url(msgspec.json.encode(claims))
        signature = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _base64url(signature)).decode(), exp

    def sign(self, message: str) -> str:
        """An HMAC-SHA256 of `message` (hex), for signed URLs."""
        return hmac.new(self._url_key, message.encode(), hashlib.sha256).hexdigest()

    def signed(self, message: str, signature: str) -> bool:
        """True when `signature` is `sign(message)` (compared in constant time)."""
        return hmac.compare_digest(self.sign(message).encode(), signature.encode())

    def verify(self, token: str) -> dict[str, object] | None:
        """The claims, or None for a forged, tampered, expired or `alg: none` token."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], issuer="flowmill",
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.PyJWTError:
            return None
        return claims if isinstance(claims.get("sub"), str) else None


@dataclass(frozen=True)
class NewApiToken:
    id: str
    secret_hash: str
    token: str  # shown once to its owner


def new_api_token() -> NewApiToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewApiToken(token_id, hash_secret(secret), f"{API_TOKEN_PREFIX}{token_id}_{secret}")


def split_api_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed API token, else None."""
    if not token.startswith(API_TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(API_TOKEN_PREFIX):].partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def hash_secret(secret: str) -> str:
    # The secret has 256 bits of entropy: a fast hash is enough, a slow KDF would only cost.
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
