"""The vault, password hashing and tokens."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.security.passwords import hash_password, verify_password
from app.security.tokens import JwtCodec, load_signing_key, new_api_token, secret_matches, split_api_token
from app.security.vault import DecryptError, Vault, load_master_key


def test_vault_uses_a_fresh_nonce_and_binds_the_identity() -> None:
    vault = Vault(secrets.token_bytes(32))
    one, two = vault.encrypt(b"secret", "credential:main:A"), vault.encrypt(b"secret", "credential:main:A")
    assert one != two and one[:12] != two[:12]
    assert vault.decrypt(one, "credential:main:A") == b"secret"
    with pytest.raises(DecryptError):
        vault.decrypt(one, "credential:main:B")
    with pytest.raises(DecryptError):
        Vault(secrets.token_bytes(32)).decrypt(one, "credential:main:A")
    tampered = bytearray(one)
    tampered[-1] ^= 1
    with pytest.raises(DecryptError):
        vault.decrypt(bytes(tampered), "credential:main:A")
    assert vault.check_canary(vault.canary()) and not Vault(secrets.token_bytes(32)).check_canary(vault.canary())


def test_master_key_file_is_made_private_and_reused(tmp_path: Path) -> None:
    key = load_master_key(tmp_path, None)
    assert len(key) == 32 and load_master_key(tmp_path, None) == key
    assert stat.S_IMODE(os.stat(tmp_path / "master.key").st_mode) == 0o600
    with pytest.raises(ConfigError):
        load_master_key(tmp_path, "c2hvcnQ=")  # base64 of 5 bytes


def test_passwords() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("correct horse", "garbage")
    assert hash_password("x") != hash_password("x")


def test_jwt_and_api_tokens(tmp_path: Path) -> None:
    codec = JwtCodec(load_signing_key(tmp_path), ttl_s=60)
    token, expires = codec.issue("alice")
    claims = codec.verify(token)
    assert claims is not None and claims["sub"] == "alice" and claims["exp"] == expires
    assert codec.verify(token + "x") is None
    assert JwtCodec(secrets.token_bytes(32), 60).verify(token) is None
    assert stat.S_IMODE(os.stat(tmp_path / "jwt.key").st_mode) == 0o600
    new = new_api_token()
    token_id, secret = split_api_token(new.token)  # type: ignore[misc]
    assert token_id == new.id and secret_matches(secret, new.secret_hash)
    assert not secret_matches(secret + "x", new.secret_hash)
    assert split_api_token("fm_short_x") is None and split_api_token("nope") is None
