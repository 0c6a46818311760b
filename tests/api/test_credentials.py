"""Credentials: stored encrypted, never shown in clear, anywhere."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.support import FlowmillServer


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_crud_and_no_clear_value_anywhere(server: FlowmillServer) -> None:
    admin = server.admin_token()
    first, second = f"first-{secrets.token_hex(12)}", f"second-{secrets.token_hex(12)}"
    bodies: list[str] = []
    with server.client(admin) as client:
        created = client.post("/api/v1/credentials", json={"name": "API_TOKEN", "value": first, "description": "d"})
        assert created.status_code == 201
        credential = created.json()
        assert set(credential) == {"id", "name", "description", "createdBy", "createdAt", "updatedAt"}
        bodies += [created.text, client.get("/api/v1/credentials").text, client.get(f"/api/v1/credentials/{credential['id']}").text]
        updated = client.put(f"/api/v1/credentials/{credential['id']}", json={"value": second})
        assert updated.status_code == 200
        bodies += [updated.text, client.get("/api/v1/audit").text, client.get("/metrics").text]
        assert client.post("/api/v1/credentials", json={"name": "API_TOKEN", "value": "x"}).status_code == 409
        assert client.post("/api/v1/credentials", json={"name": "bad name!", "value": "x"}).status_code == 400
        assert client.post("/api/v1/credentials", json={"name": "BIG", "value": "x" * 70_000}).status_code == 413
        assert [c["name"] for c in client.get("/api/v1/credentials").json()] == ["API_TOKEN"]
    for value in (first, second):
        assert not any(value in body for body in bodies)
        assert value not in server.output()
        assert files_containing(server.home, value.encode()) == []
    with server.client(admin) as client:
        assert client.delete(f"/api/v1/credentials/{credential['id']}").status_code == 204
        assert client.get(f"/api/v1/credentials/{credential['id']}").status_code == 404
        assert client.delete(f"/api/v1/credentials/{credential['id']}").status_code == 404


def test_values_decrypt_for_the_engine_only_under_their_own_name(backend: str) -> None:
    """The vault binds each value to its credential: moved to another row, it does not decrypt."""
    import asyncio

    from app.security.vault import DecryptError, Vault
    from app.services.credentials import identity

    vault = Vault(secrets.token_bytes(32))
    blob = vault.encrypt(b"value", identity("main", "A"))
    assert vault.decrypt(blob, identity("main", "A")) == b"value"
    for other in (identity("main", "B"), identity("other", "A")):
        try:
            vault.decrypt(blob, other)
        except DecryptError:
            continue
        raise AssertionError(f"decrypted under {other}")
    assert asyncio.iscoroutinefunction(vault.decrypt) is False
