"""The vault, password hashing and tokens."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import time
from pathlib import Path

import jwt
import pytest

from app.errors import ConfigError
from app.security.passwords import hash_password, verify_password
from app.security.tokens import JwtCodec, load_signing_key, new_api_token, secret_matches, split_api_token
from app.security.vault import DecryptError, Vault, load_master_key
from app.services.credentials import identity


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
    kind, n, r, p, salt, digest = stored.split("$")
    assert int(n) * int(r) * 128 >= 16 * 1024 * 1024  # memory-hard: at least 16 MiB per hash
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("correct horse", "garbage")
    assert not verify_password("correct horse", stored.replace("scrypt$", "plain$"))
    assert not verify_password("correct horse", "$".join([kind, n, r, p, salt, digest[:-4] + "AAA="]))
    assert hash_password("x") != hash_password("x")
    assert verify_password("ünïcode ✓", hash_password("ünïcode ✓"))


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


def test_jwt_verification_pins_the_algorithm_the_issuer_and_the_expiry() -> None:
    key = secrets.token_bytes(32)
    codec = JwtCodec(key, ttl_s=60)
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 60, "iss": "flowmill"}
    assert codec.verify(jwt.encode(claims, key, algorithm="HS256")) is not None

    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    refused = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "HS512": jwt.encode(claims, key, algorithm="HS512"),
        "HS384": jwt.encode(claims, key, algorithm="HS384"),
        "expired": jwt.encode({**claims, "exp": now - 1}, key, algorithm="HS256"),
        "another issuer": jwt.encode({**claims, "iss": "other"}, key, algorithm="HS256"),
        "no issuer": jwt.encode({k: v for k, v in claims.items() if k != "iss"}, key, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key, algorithm="HS256"),
        "no subject": jwt.encode({k: v for k, v in claims.items() if k != "sub"}, key, algorithm="HS256"),
        "a number as subject": jwt.encode({**claims, "sub": 5}, key, algorithm="HS256"),
        "another key": jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256"),
        "empty": "",
        "three dots": "a.b.c",
    }
    assert {what: codec.verify(token) for what, token in refused.items()} == {what: None for what in refused}


def test_issued_jwts_expire_and_differ() -> None:
    key = secrets.token_bytes(32)
    codec = JwtCodec(key, ttl_s=60)
    one, expires = codec.issue("bob", job="j-1")
    # Standard HS256 JWTs, which any JWT library reads (the wmill client, for one, decodes them).
    assert jwt.get_unverified_header(one) == {"alg": "HS256", "typ": "JWT"}
    assert jwt.decode(one, key, algorithms=["HS256"], issuer="flowmill")["job"] == "j-1"
    two, _ = codec.issue("bob")
    assert one != two  # each has its own id
    assert int(time.time()) + 58 <= expires <= int(time.time()) + 61
    assert codec.verify(one) is not None
    past, _ = codec.issue("bob", ttl_s=-1)  # expired the second it was made
    assert codec.verify(past) is None


def test_a_credential_decrypts_only_under_its_own_workspace_and_name() -> None:
    vault = Vault(secrets.token_bytes(32))
    blob = vault.encrypt(b"value", identity("main", "A"))
    assert b"value" not in blob and len(blob) == 12 + len(b"value") + 16  # nonce, ciphertext, tag
    assert vault.decrypt(blob, identity("main", "A")) == b"value"
    for other in (identity("main", "B"), identity("other", "A"), identity("main", "a")):
        with pytest.raises(DecryptError):
            vault.decrypt(blob, other)
    nonces = {vault.encrypt(b"value", identity("main", "A"))[:12] for _ in range(200)}
    assert len(nonces) == 200
    with pytest.raises(DecryptError):
        vault.decrypt(blob[:10], identity("main", "A"))


def test_api_tokens_are_random_and_stored_as_hashes() -> None:
    tokens = [new_api_token() for _ in range(50)]
    assert len({t.token for t in tokens}) == 50 and len({t.id for t in tokens}) == 50
    for token in tokens[:5]:
        assert token.token.startswith("fm_") and token.secret_hash not in token.token
        _, secret = split_api_token(token.token)  # type: ignore[misc]
        assert secret not in token.secret_hash and len(secret) >= 40
