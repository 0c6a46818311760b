"""Password hashing with scrypt, a memory-hard KDF (16 MiB and ~50 ms per hash here)."""

from __future__ import annotations

import base64
import ctypes
import hmac
import secrets

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

N, R, P = 2**14, 8, 1


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    try:
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())
    finally:
        _give_back_memory()


def _give_back_memory() -> None:
    """scrypt's 16 MiB would otherwise stay resident in the thread's malloc arena after use."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash`, all a verifier needs."""
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, N, R, P)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches; compares in constant time."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# A hash to verify against when the user does not exist, so that a login for an unknown
# name takes as long as one with a wrong password.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
