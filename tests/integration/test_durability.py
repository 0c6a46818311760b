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
        credential = client.post("/api/v1/credentials", json={"name": "KEEP", "value": "v"}).json()
    assert server.stop() == 0
    server.start()
    with server.client(admin) as client:  # the session token outlives the restart too
        assert client.get("/api/v1/kv/keep/a").json()["value"] == {"n": 1}
        assert client.get(f"/api/v1/credentials/{credential['id']}").json()["name"] == "KEEP"


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
                    response = client.put(f"/api/v1/kv/load/{key}", json={"n": n, "w": worker})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    with lock:
                        acknowledged[key] = n

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(1.0, 2.0))
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) > 50, "the load did not get going"
    server.start()
    with server.client(token) as client:
        missing = []
        for key, n in acknowledged.items():
            response = client.get(f"/api/v1/kv/load/{key}")
            if response.status_code != 200 or response.json()["value"]["n"] != n:
                missing.append(key)
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged writes were lost"
