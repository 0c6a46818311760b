"""Every write answered 2xx survives a restart and a kill -9 at any moment."""

from __future__ import annotations

import random
import threading
import time

import httpx

from tests.support import FlowmillServer


def test_data_survives_a_clean_restart(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    admin = server.admin_token()
    with server.client(admin) as client:
        client.put("/api/v1/kv/keep/a", json={"n": 1}).raise_for_status()
        client.put("/api/v1/kv/keep/b", json=[1, "two"]).raise_for_status()
        client.put("/api/v1/kv/keep/gone", json=0).raise_for_status()
        client.delete("/api/v1/kv/keep/gone").raise_for_status()
        credential = client.post("/api/v1/credentials", json={"name": "KEEP", "value": "v", "description": "kept"}).json()
        api_token = client.post("/api/v1/tokens", json={"label": "survivor"}).json()
        revoked = client.post("/api/v1/tokens", json={"label": "revoked"}).json()
        client.delete(f"/api/v1/tokens/{revoked['id']}").raise_for_status()
        client.post("/api/v1/workspaces", json={"id": "kept-ws", "name": "Kept"}).raise_for_status()
        client.put("/api/v1/w/kept-ws/kv/ns/k", json="in kept-ws").raise_for_status()
        audit_before = client.get("/api/v1/audit", params={"limit": 200}).json()["items"]
    editor = server.user("kept-editor", "editor", workspace="kept-ws")
    assert server.stop() == 0
    server.start()
    with server.client(admin) as client:  # the session token outlives the restart too
        assert client.get("/api/v1/kv/keep/a").json()["value"] == {"n": 1}
        assert client.get("/api/v1/kv/keep/b").json()["value"] == [1, "two"]
        assert client.get("/api/v1/kv/keep/gone").status_code == 404
        assert client.get(f"/api/v1/credentials/{credential['id']}").json() == credential
        assert [w["id"] for w in client.get("/api/v1/workspaces").json()] == ["kept-ws", "main"]
        assert client.get("/api/v1/w/kept-ws/kv/ns/k").json()["value"] == "in kept-ws"
        audit_after = client.get("/api/v1/audit", params={"limit": 200}).json()["items"]
        assert audit_after[-len(audit_before):] == audit_before
    with server.client(api_token["token"]) as client:
        assert client.get("/api/v1/kv/keep/a").status_code == 200
    with server.client(revoked["token"]) as client:
        assert client.get("/api/v1/kv/keep/a").status_code == 401
    with server.client(editor) as client:
        assert client.put("/api/v1/w/kept-ws/kv/ns/k2", json=2).status_code == 200
        assert client.get("/api/v1/kv/keep/a").status_code == 403
    assert server.login("kept-editor")


def test_acknowledged_writes_survive_kill_9_under_load(fresh_server: FlowmillServer) -> None:
    server = fresh_server
    server.start()
    token = server.admin_token()
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                key = f"w{worker}-{n}"
                try:
                    response = client.put(f"/api/v1/kv/load/{key}", json={"n": n, "w": worker, "pad": key * 8})
                except httpx.HTTPError:
                    return  # the server is gone
                if 200 <= response.status_code < 300:
                    with lock:
                        acknowledged[key] = n

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.8, 2.0))
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(15)
    assert not any(thread.is_alive() for thread in threads)
    assert len(acknowledged) > 50, "the load did not get going"
    print(f"\n[{server.backend}] {len(acknowledged)} writes acknowledged before kill -9")
    server.start()
    with server.client(token) as client:
        missing = []
        for key, n in acknowledged.items():
            response = client.get(f"/api/v1/kv/load/{key}")
            if response.status_code != 200 or response.json()["value"] != {"n": n, "w": int(key[1:key.index("-")]), "pad": key * 8}:
                missing.append(key)
        # and the store still takes writes after the crash
        assert client.put("/api/v1/kv/load/after", json=1).status_code == 200
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged writes were lost"
    assert server.count("kv_entry", "namespace = 'load'") >= len(acknowledged) + 1
