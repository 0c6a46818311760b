"""The secrets vault: AES-256-GCM under the master key.

Every value gets a fresh 96-bit nonce, and the record's identity (for example
`credential:main:API_TOKEN`) is bound as associated data, so a ciphertext moved to another
record does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import ConfigError

NONCE_BYTES = 12
CANARY_AAD = b"flowmill:vault-canary"


class DecryptError(Exception):
    """A ciphertext does not decrypt under this key with this identity."""


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the master key in {origin} is not base64") from None
    if len(key) != 32:
        raise ConfigError(f"the master key in {origin} must be 32 bytes, not {len(key)}")
    return key


def load_master_key(home: Path, from_env: str | None) -> bytes:
    """The master key: from the environment if given, else `<home>/master.key`, created 0600."""
    if from_env:
        return _decode_key(from_env, "FLOWMILL_MASTER_KEY")
    path = home / "master.key"
    if not path.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_text = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_text)
            f.flush()
            os.fsync(f.fileno())
    try:
        return _decode_key(path.read_text(), str(path))
    except OSError as error:
        raise ConfigError(f"cannot read the master key {path}: {error.strerror}") from None


class Vault:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, identity: str) -> bytes:
        """nonce || ciphertext+tag, bound to `identity`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, identity.encode())

    def decrypt(self, blob: bytes, identity: str) -> bytes:
        """The plaintext; DecryptError if the key, the identity or the bytes are wrong."""
        try:
            return self._aead.decrypt(bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), identity.encode())
        except (InvalidTag, ValueError):
            raise DecryptError(f"cannot decrypt the secret {identity}") from None

    def canary(self) -> bytes:
        """A value stored once, so that a start with a different key is caught at once."""
        return self.encrypt(b"flowmill", CANARY_AAD.decode())

    def check_canary(self, blob: bytes) -> bool:
        try:
            return self.decrypt(blob, CANARY_AAD.decode()) == b"flowmill"
        except DecryptError:
            return False
