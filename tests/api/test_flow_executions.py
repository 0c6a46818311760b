"""Flow executions through the HTTP API: every construct of the language run for real, with its
outputs, statuses and order checked; approvals; cancel, retry and replay; flows as runnables."""

from __future__ import annotations

import textwrap
import time
from typing import Any

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def api(server: FlowmillServer) -> httpx.Client:
    with server.client(server.admin_token()) as client:
        yield client


def flow(api: httpx.Client, yaml_text: str) -> dict[str, Any]:
    text = textwrap.dedent(yaml_text)
    response = api.post("/api/v1/flows", json={"yamlContent": text})
    if response.status_code == 409:
        found = next(f for f in api.get("/api/v1/flows", params={"limit": 200}).json()["items"]
                     if text.find(f"name: {f['name']}") >= 0 and text.find(f"namespace: {f['namespace']}") >= 0)
        response = api.put(f"/api/v1/flows/{found['id']}", json={"yamlContent": text})
        assert response.status_code == 200, response.text
        return response.json()
    assert response.status_code == 201, response.text
    return response.json()


def execute(api: httpx.Client, flow_id: str, inputs: dict[str, Any] | None = None) -> str:
    response = api.post(f"/api/v1/flows/{flow_id}/execute", json={"inputs": inputs or {}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "QUEUED" and body["executionId"] == body["jobId"]
    return body["executionId"]


def finished(api: httpx.Client, execution_id: str, timeout_s: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (e := api.get(f"/api/v1/executions/{execution_id}").json())["execution"]["status"] in FINAL
                    and e, timeout_s, f"execution {execution_id} to end")


def run(api: httpx.Client, yaml_text: str, inputs: dict[str, Any] | None = None, timeout_s: float = 30) -> dict[str, Any]:
    return finished(api, execute(api, flow(api, yaml_text)["id"], inputs), timeout_s)


def tasks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["key"]: task for task in result["tasks"]}


def test_sequence_inputs_templates_and_outputs(api: httpx.Client) -> None:
    result = run(api, """
        name: greet
        namespace: t
        inputs:
          - {name: who, type: string, default: world}
          - {name: times, type: integer, required: true, min: 1}
        tasks:
          - name: hello
            type: util.set
            properties: {value: "Hello {{ inputs.who }}"}
          - name: count
            type: util.set
            properties: {value: "{{ inputs.times * 2 }}"}
          - name: say
            type: util.log
            properties: {message: "{{ outputs.hello.value }} x{{ outputs.count.value }}"}
        outputs:
          greeting: "{{ outputs.hello.value }}"
          doubled: "{{ outputs.count.value }}"
        """, {"times": 3})
    execution = result["execution"]
    assert execution["status"] == "SUCCESS", execution
    assert execution["outputs"] == {"greeting": "Hello world", "doubled": 6}
    assert execution["tasksTotal"] == 3 and execution["tasksExecuted"] == 3
    assert [t["taskName"] for t in result["tasks"]] == ["hello", "count", "say"]
    assert all(t["status"] == "SUCCESS" and t["startedAt"] <= t["finishedAt"] for t in result["tasks"])
    logs = api.get(f"/api/v1/jobs/{execution['id']}/logs").json()
    assert any("Hello world x6" in line["line"] for line in logs)


def test_inputs_are_checked_before_an_execution_exists(server: FlowmillServer, api: httpx.Client) -> None:
    created = flow(api, """
        name: typed
        namespace: t
        inputs:
          - {name: n, type: integer, required: true, max: 10}
          - {name: color, type: select, values: [red, blue]}
        tasks:
          - {name: a, type: util.noop}
        """)
    before = server.count("job", "kind = 'flow'")
    for bad in ({}, {"n": 11}, {"n": "3"}, {"n": 1, "color": "green"}, {"n": 1, "nope": 2}):
        response = api.post(f"/api/v1/flows/{created['id']}/execute", json={"inputs": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["details"]["errors"][0]["path"].startswith("inputs.")
    assert server.count("job", "kind = 'flow'") == before


def test_if_switch_and_skipped_and_disabled(api: httpx.Client) -> None:
    result = run(api, """
        name: branches
        namespace: t
        inputs:
          - {name: n, type: integer, default: 5}
        tasks:
          - name: check
            type: flow.if
            properties:
              condition: "{{ inputs.n > 3 }}"
              then:
                - {name: big, type: util.set, properties: {value: big}}
              else:
                - {name: small, type: util.set, properties: {value: small}}
          - name: pick
            type: flow.switch
            properties:
              value: "{{ outputs.big.value }}"
              cases:
                big:
                  - {name: on_big, type: util.set, properties: {value: 1}}
                small:
                  - {name: on_small, type: util.set, properties: {value: 2}}
              default:
                - {name: on_other, type: util.set, properties: {value: 3}}
          - name: never
            type: util.log
            runIf: "{{ inputs.n > 100 }}"
            properties: {message: no}
          - name: switched_off
            type: util.log
            disabled: true
            properties: {message: no}
        outputs:
          branch: "{{ outputs.check.branch }}"
          case: "{{ outputs.pick.case }}"
        """)
    assert result["execution"]["status"] == "SUCCESS", result
    assert result["execution"]["outputs"] == {"branch": "then", "case": "big"}
    by_key = tasks(result)
    assert by_key["big"]["status"] == "SUCCESS" and "small" not in by_key
    assert by_key["on_big"]["outputs"] == {"value": 1} and "on_small" not in by_key and "on_other" not in by_key
    assert by_key["never"]["status"] == "SKIPPED" and "switched_off" not in by_key


def test_foreach_parallel_and_loop_until(api: httpx.Client) -> None:
    result = run(api, """
        name: loops
        namespace: t
        tasks:
          - name: each
            type: flow.foreach
            properties:
              items: [1, 2, 3]
              concurrency: 2
              tasks:
                - {name: square, type: util.set, properties: {value: "{{ item * item }}"}}
                - {name: where, type: util.set, properties: {value: "{{ index }}"}}
          - name: both
            type: flow.parallel
            properties:
              tasks:
                - {name: left, type: util.sleep, properties: {duration: 200ms}}
                - {name: right, type: util.sleep, properties: {duration: 200ms}}
          - name: until
            type: flow.loop_until
            properties:
              condition: "{{ index >= 2 }}"
              tasks:
                - {name: tick, type: util.set, properties: {value: "{{ index }}"}}
        outputs:
          squares: "{{ outputs.each.iterations | map(attribute='square') | map(attribute='value') | list }}"
          loops: "{{ outputs.until.iterations }}"
        """)
    assert result["execution"]["status"] == "SUCCESS", result
    assert result["execution"]["outputs"] == {"squares": [1, 4, 9], "loops": 3}
    by_key = tasks(result)
    assert {by_key[f"each[{i}].where"]["outputs"]["value"] for i in range(3)} == {0, 1, 2}
    left, right = by_key["left"], by_key["right"]
    assert left["startedAt"] < right["finishedAt"] and right["startedAt"] < left["finishedAt"]  # at once
    assert by_key["until[2].tick"]["outputs"] == {"value": 2}


def test_failure_runs_errors_then_finally_and_allow_failure_goes_on(api: httpx.Client) -> None:
    result = run(api, """
        name: failing
        namespace: t
        tasks:
          - {name: soft, type: flow.fail, allowFailure: true, properties: {message: tolerated}}
          - {name: hard, type: flow.fail, properties: {message: "stop here"}}
          - {name: after, type: util.log, properties: {message: never}}
        errors:
          - {name: alert, type: util.set, properties: {value: "{{ execution.error.message }}"}}
        finally:
          - {name: cleanup, type: util.set, properties: {value: done}}
        """)
    execution = result["execution"]
    assert execution["status"] == "FAILED" and execution["error"]["message"] == "stop here"
    assert execution["error"]["task"] == "hard"
    by_key = tasks(result)
    assert by_key["soft"]["status"] == "FAILED" and by_key["hard"]["status"] == "FAILED" and "after" not in by_key
    assert by_key["errors/alert"]["outputs"] == {"value": "stop here"}
    assert by_key["finally/cleanup"]["outputs"] == {"value": "done"}
    order = [t["key"] for t in sorted(result["tasks"], key=lambda t: (t["finishedAt"], t["startedAt"]))]
    assert order.index("hard") < order.index("errors/alert") <= order.index("finally/cleanup")


def test_retry_policy_and_task_timeout(api: httpx.Client) -> None:
    result = run(api, """
        name: retrying
        namespace: t
        tasks:
          - name: flaky
            type: util.assert
            retry: {type: constant, attempts: 3, interval: 50ms}
            allowFailure: true
            properties: {condition: false, message: nope}
          - name: slow
            type: util.sleep
            timeout: 200ms
            properties: {duration: 5s}
        """)
    by_key = tasks(result)
    assert by_key["flaky"]["status"] == "FAILED" and by_key["flaky"]["attempts"] == 3
    assert by_key["slow"]["status"] == "FAILED" and by_key["slow"]["error"]["name"] == "Timeout"
    assert result["execution"]["status"] == "FAILED"


def test_sleep_waits_without_a_slot_then_goes_on(api: httpx.Client) -> None:
    created = flow(api, """
        name: sleeper
        namespace: t
        tasks:
          - {name: nap, type: flow.sleep, properties: {duration: 1s}}
          - {name: woke, type: util.set, properties: {value: woken}}
        """)
    execution_id = execute(api, created["id"])
    waiting = wait_for(lambda: (e := api.get(f"/api/v1/executions/{execution_id}").json())["execution"]["status"]
                       == "WAITING" and e, 10, "the sleep")
    assert waiting["execution"]["wakeAt"] is not None
    result = finished(api, execution_id)
    assert result["execution"]["status"] == "SUCCESS" and tasks(result)["woke"]["outputs"] == {"value": "woken"}


def test_subflow_outputs_and_flow_timeout(api: httpx.Client) -> None:
    flow(api, """
        name: child
        namespace: t
        inputs:
          - {name: x, type: integer}
        tasks:
          - {name: twice, type: util.set, properties: {value: "{{ inputs.x * 2 }}"}}
        outputs:
          y: "{{ outputs.twice.value }}"
        """)
    result = run(api, """
        name: parent
        namespace: t
        tasks:
          - name: call
            type: flow.subflow
            properties: {namespace: t, name: child, inputs: {x: 21}}
        outputs:
          y: "{{ outputs.call.outputs.y }}"
        """)
    assert result["execution"]["status"] == "SUCCESS", result
    assert result["execution"]["outputs"] == {"y": 42}
    timed = run(api, """
        name: too-slow
        namespace: t
        timeout: 1s
        tasks:
          - {name: nap, type: flow.sleep, properties: {duration: 30s}}
        """)
    assert timed["execution"]["status"] == "TIMED_OUT"


def test_approval_is_decided_with_values(api: httpx.Client, server: FlowmillServer) -> None:
    created = flow(api, """
        name: gated
        namespace: t
        tasks:
          - name: gate
            type: flow.approval
            properties:
              message: "Ship it?"
              form:
                - {name: note, type: string, required: true}
          - {name: shipped, type: util.set, properties: {value: "{{ outputs.gate.values.note }}"}}
        """)
    execution_id = execute(api, created["id"])
    pending = wait_for(lambda: [a for a in api.get("/api/v1/approvals").json() if a["executionId"] == execution_id],
                       10, "the approval")[0]
    assert pending["status"] == "PENDING" and pending["message"] == "Ship it?"
    assert api.get(f"/api/v1/executions/{execution_id}").json()["execution"]["status"] == "WAITING"
    assert api.post(f"/api/v1/approvals/{pending['id']}/approve", json={"values": {}}).status_code == 400
    decided = api.post(f"/api/v1/approvals/{pending['id']}/approve", json={"values": {"note": "go"}})
    assert decided.status_code == 200 and decided.json()["decidedBy"] == "admin"
    assert api.post(f"/api/v1/approvals/{pending['id']}/reject", json={}).status_code == 409
    result = finished(api, execution_id)
    assert result["execution"]["status"] == "SUCCESS"
    assert tasks(result)["gate"]["outputs"]["approved"] is True and tasks(result)["shipped"]["outputs"] == {"value": "go"}
    rejected_id = execute(api, created["id"])
    pending = wait_for(lambda: [a for a in api.get("/api/v1/approvals").json() if a["executionId"] == rejected_id],
                       10, "the approval")[0]
    assert api.post(f"/api/v1/approvals/{pending['id']}/reject", json={}).status_code == 200
    assert finished(api, rejected_id)["execution"]["status"] == "FAILED"


def test_python_task_and_cancel_within_two_seconds(api: httpx.Client) -> None:
    result = run(api, """
        name: py
        namespace: t
        tasks:
          - name: compute
            type: script.python
            properties:
              code: |
                def main(n: int):
                    print("computing", n)
                    return n + 1
              args: {n: 41}
        outputs:
          answer: "{{ outputs.compute.result }}"
        """)
    assert result["execution"]["status"] == "SUCCESS", result
    assert result["execution"]["outputs"] == {"answer": 42}
    for body in ("{type: flow.sleep, properties: {duration: 60s}}",
                 "{type: script.python, properties: {code: \"import time\\ndef main():\\n    time.sleep(60)\\n\"}}"):
        created = flow(api, f"""
            name: cancel-me
            namespace: t
            tasks:
              - {{name: long, {body[1:]}
            """)
        execution_id = execute(api, created["id"])
        wait_for(lambda: api.get(f"/api/v1/executions/{execution_id}").json()["execution"]["status"]
                 in ("RUNNING", "WAITING"), 10, "the execution to start")
        time.sleep(0.5)
        asked = time.monotonic()
        assert api.post(f"/api/v1/executions/{execution_id}/cancel").status_code == 200
        result = finished(api, execution_id, 5)
        assert result["execution"]["status"] == "CANCELLED" and time.monotonic() - asked < 2


def test_retry_keeps_what_succeeded_and_replay_reuses_outputs(api: httpx.Client) -> None:
    created = flow(api, """
        name: retry-me
        namespace: t
        inputs:
          - {name: ok, type: boolean, default: false}
        tasks:
          - {name: first, type: util.uuid}
          - {name: gate, type: util.assert, properties: {condition: "{{ kv('t', 'retry-ok') == true }}"}}
          - {name: last, type: util.set, properties: {value: "{{ outputs.first.uuid }}"}}
        """)
    api.delete("/api/v1/kv/t/retry-ok")
    execution_id = execute(api, created["id"])
    failed = finished(api, execution_id)
    assert failed["execution"]["status"] == "FAILED"
    first = tasks(failed)["first"]["outputs"]["uuid"]
    api.put("/api/v1/kv/t/retry-ok", json=True)
    retried = api.post(f"/api/v1/executions/{execution_id}/retry")
    assert retried.status_code == 200, retried.text
    result = finished(api, execution_id)
    assert result["execution"]["status"] == "SUCCESS"
    assert tasks(result)["first"]["outputs"]["uuid"] == first  # not run again
    assert tasks(result)["last"]["outputs"] == {"value": first}
    assert api.post(f"/api/v1/executions/{execution_id}/retry").status_code == 409  # SUCCESS is not retried
    replay = api.post(f"/api/v1/executions/{execution_id}/replay", json={"fromTask": "gate"})
    assert replay.status_code == 201, replay.text
    replayed = finished(api, replay.json()["executionId"])
    assert replayed["execution"]["status"] == "SUCCESS"
    assert tasks(replayed)["first"]["outputs"]["uuid"] == first
    fresh = api.post(f"/api/v1/executions/{execution_id}/replay", json={"fromTask": "first"})
    assert tasks(finished(api, fresh.json()["executionId"]))["first"]["outputs"]["uuid"] != first
    assert api.post(f"/api/v1/executions/{execution_id}/replay", json={"fromTask": "nope"}).status_code == 400


def test_executions_list_filters_and_cursor(api: httpx.Client) -> None:
    created = flow(api, """
        name: listed
        namespace: lists
        labels: {team: ops}
        tasks:
          - {name: a, type: util.noop}
        """)
    ids = [execute(api, created["id"]) for _ in range(3)]
    for execution_id in ids:
        finished(api, execution_id)
    page = api.get("/api/v1/executions", params={"flowId": created["id"], "limit": 2}).json()
    assert [e["id"] for e in page["items"]] == ids[::-1][:2] and page["nextCursor"]
    rest = api.get("/api/v1/executions", params={"flowId": created["id"], "cursor": page["nextCursor"]}).json()
    assert [e["id"] for e in rest["items"]] == [ids[0]]
    assert {e["id"] for e in api.get("/api/v1/executions", params={"namespace": "lists"}).json()["items"]} == set(ids)
    assert {e["id"] for e in api.get("/api/v1/executions", params={"labels": "team=ops"}).json()["items"]} == set(ids)
    assert api.get("/api/v1/executions", params={"labels": "team=dev"}).json()["items"] == []
    assert api.get("/api/v1/executions", params={"status": "FAILED", "flowId": created["id"]}).json()["items"] == []


def test_flows_behind_routes_webhooks_and_wmill(server: FlowmillServer, api: httpx.Client) -> None:
    flow(api, """
        name: hook
        namespace: t
        inputs:
          - {name: order, type: integer, default: 0}
        tasks:
          - {name: seen, type: util.set, properties: {value: "{{ inputs.order }}-{{ trigger.body.extra if trigger else 'none' }}"}}
        outputs:
          seen: "{{ outputs.seen.value }}"
        """)
    route = api.post("/api/v1/routes", json={"path": "flowhook", "method": "POST", "requestType": "sync",
                                              "runnable": {"kind": "flow", "path": "f/t/hook"}})
    assert route.status_code == 201, route.text
    answer = httpx.post(f"{server.url}/api/r/flowhook", json={"order": 7, "extra": "x"})
    assert answer.status_code == 200 and answer.json() == {"seen": "7-x"}, answer.text
    hook = api.post("/api/v1/triggers", json={"kind": "webhook", "key": "flow-in",
                                               "runnable": {"kind": "flow", "path": "f/t/hook"}})
    assert hook.status_code == 201, hook.text
    fired = httpx.post(f"{server.url}/api/v1/webhook/flow-in", json={"order": 8, "extra": "y"})
    assert fired.status_code == 202
    assert finished(api, fired.json()["jobId"])["execution"]["outputs"] == {"seen": "8-y"}
    started = api.post("/api/w/main/jobs/run/f/f/t/hook", json={"order": 9})
    assert started.status_code == 201, started.text
    assert finished(api, started.text)["execution"]["outputs"] == {"seen": "9-none"}


def _websocket(server: FlowmillServer, path: str, token: str | None) -> list[dict[str, Any] | int]:
    """A minimal RFC 6455 client: the handshake, then every text frame as JSON until the server
    closes, which ends the list with its close code (or the refused handshake's HTTP status)."""
    import base64
    import json
    import os
    import socket
    import struct

    url = httpx.URL(server.url)
    with socket.create_connection((url.host, url.port), timeout=15) as sock:
        headers = [f"GET {path} HTTP/1.1", f"Host: {url.host}:{url.port}", "Upgrade: websocket", "Connection: Upgrade",
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
                   *([f"Authorization: Bearer {token}"] if token else [])]
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        while reader.readline() not in (b"\r\n", b""):
            pass
        if status != 101:
            return [status]
        received: list[dict[str, Any] | int] = []
        while True:
            first, second = reader.read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", reader.read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", reader.read(8))[0]
            payload = reader.read(size)  # a server's frames are not masked
            if first & 0x0F == 0x8:  # close
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                sock.sendall(b"\x88\x82" + b"\0\0\0\0" + payload[:2])  # echo it, masked with zeros
                return [*received, code]
            if first & 0x0F == 0x1:
                received.append(json.loads(payload))


def test_websocket_logs_give_past_lines_then_the_end(server: FlowmillServer, api: httpx.Client) -> None:
    execution_id = execute(api, flow(api, """
        name: ws-logs
        namespace: t
        tasks:
          - {name: say, type: util.log, properties: {message: "over the socket"}}
        """)["id"])
    assert finished(api, execution_id)["execution"]["status"] == "SUCCESS"
    path = f"/api/v1/executions/{execution_id}/logs"
    *messages, code = _websocket(server, path, server.admin_token())
    assert code == 1000, messages
    assert any("over the socket" in m.get("line", "") for m in messages[:-1]), messages
    assert messages[-1]["event"] == "end" and messages[-1]["status"] == "SUCCESS"
    assert {"outputs", "error"} <= set(messages[-1])
    # No token: refused with the close code 4401 (4000 + the HTTP status), nothing sent before it.
    assert _websocket(server, path, None) == [4401]


def test_sse_logs_end_with_result_then_end(api: httpx.Client) -> None:
    execution_id = execute(api, flow(api, """
        name: sse-logs
        namespace: t
        tasks:
          - {name: say, type: util.log, properties: {message: "over sse"}}
        """)["id"])
    with api.stream("GET", f"/api/v1/executions/{execution_id}/logs/stream") as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("event:").strip() for line in answer.iter_lines() if line.startswith("event:")]
    assert events[-2:] == ["result", "end"], events
    assert "log" in events[:-2]


def test_viewer_reads_but_cannot_act_and_approvals_ask_their_role(server: FlowmillServer, api: httpx.Client) -> None:
    suffix = str(time.monotonic_ns())
    viewer = server.client(server.user(f"exec-viewer{suffix}", "viewer"))
    executor = server.client(server.user(f"exec-executor{suffix}", "executor"))
    gated = flow(api, """
        name: role-gated
        namespace: t
        tasks:
          - {name: gate, type: flow.approval, properties: {message: "admins only", role: admin}}
        """)
    execution_id = execute(api, gated["id"])
    approval = wait_for(lambda: [a for a in api.get("/api/v1/approvals").json() if a["executionId"] == execution_id],
                        10, "the approval")[0]
    assert approval["role"] == "admin"
    with viewer, executor:
        assert viewer.get("/api/v1/executions").status_code == 200
        assert viewer.get(f"/api/v1/executions/{execution_id}").status_code == 200
        assert viewer.get("/api/v1/approvals").status_code == 200
        assert viewer.get(f"/api/v1/approvals/{approval['id']}").status_code == 200
        for method, url, body in (
                ("POST", f"/api/v1/flows/{gated['id']}/execute", {"inputs": {}}),
                ("POST", f"/api/v1/executions/{execution_id}/cancel", None),
                ("POST", f"/api/v1/executions/{execution_id}/retry", None),
                ("POST", f"/api/v1/executions/{execution_id}/replay", {"fromTask": "gate"}),
                ("POST", f"/api/v1/approvals/{approval['id']}/approve", {"values": {}}),
                ("POST", f"/api/v1/approvals/{approval['id']}/reject", {})):
            refused = viewer.request(method, url, json=body)
            assert refused.status_code == 403, (url, refused.status_code, refused.text)
        refused = executor.post(f"/api/v1/approvals/{approval['id']}/approve", json={"values": {}})
        assert refused.status_code == 403, refused.text
    assert api.get(f"/api/v1/approvals/{approval['id']}").json()["status"] == "PENDING"
    assert api.post(f"/api/v1/approvals/{approval['id']}/approve", json={"values": {}}).status_code == 200
    assert finished(api, execution_id)["execution"]["status"] == "SUCCESS"


def test_credentials_and_secret_inputs_never_reach_what_is_stored(server: FlowmillServer, api: httpx.Client) -> None:
    assert api.post("/api/v1/credentials", json={"name": "FLOW_TOKEN", "value": "tok-1234-secret"}).status_code == 201
    result = run(api, """
        name: secretive
        namespace: t
        inputs:
          - {name: password, type: secret, required: true}
        tasks:
          - {name: use, type: util.log, properties: {message: "token ${FLOW_TOKEN} pw {{ inputs.password }}"}}
          - {name: echo, type: util.set, properties: {value: "${FLOW_TOKEN}/{{ inputs.password }}"}}
        outputs:
          echoed: "{{ outputs.echo.value }}"
        """, {"password": "hunter2-pass"})
    execution = result["execution"]
    assert execution["status"] == "SUCCESS", execution
    assert execution["outputs"] == {"echoed": "***/***"} and execution["inputs"] == {"password": "***"}
    logs = " ".join(line["line"] for line in api.get(f"/api/v1/jobs/{execution['id']}/logs").json())
    assert "token *** pw ***" in logs
    stored = server.dump()
    assert "tok-1234-secret" not in stored and "hunter2-pass" not in stored


def test_kv_shell_and_run_script_tasks(api: httpx.Client) -> None:
    assert api.post("/api/v1/scripts", json={"path": "f/t/double", "content": "def main(x: int):\n    return x * 2\n"}
                    ).status_code in (200, 201)
    result = run(api, """
        name: plugins
        namespace: t
        tasks:
          - {name: put, type: kv.set, properties: {namespace: flowkv, key: k1, value: {n: 3}}}
          - {name: read, type: kv.get, properties: {namespace: flowkv, key: k1}}
          - {name: drop, type: kv.delete, properties: {namespace: flowkv, key: k1}}
          - {name: gone, type: kv.get, properties: {namespace: flowkv, key: k1}}
          - {name: shell, type: script.shell, properties: {command: "echo from-shell; echo $((6 * 7))"}}
          - {name: call, type: flowmill.run_script, properties: {path: f/t/double, args: {x: 21}}}
        outputs:
          read: "{{ outputs.read.value.n }}"
          found: "{{ outputs.gone.found }}"
          shell: "{{ outputs.shell.stdout }}"
          call: "{{ outputs.call.result }}"
        """, timeout_s=60)
    execution = result["execution"]
    assert execution["status"] == "SUCCESS", result
    assert execution["outputs"] == {"read": 3, "found": False, "shell": "from-shell\n42\n", "call": 42}
    assert api.get("/api/v1/kv/flowkv/k1").status_code == 404


def test_flow_concurrency_limit_queues_extra_executions(api: httpx.Client) -> None:
    created = flow(api, """
        name: one-at-a-time
        namespace: t
        concurrency: {limit: 1}
        tasks:
          - {name: busy, type: util.sleep, properties: {duration: 600ms}}
        """)
    first, second = execute(api, created["id"]), execute(api, created["id"])
    time.sleep(0.3)
    assert api.get(f"/api/v1/executions/{second}").json()["execution"]["status"] == "QUEUED"
    one, two = finished(api, first)["execution"], finished(api, second)["execution"]
    assert one["status"] == two["status"] == "SUCCESS"
    assert two["startedAt"] >= one["finishedAt"]


def test_approval_timeout_takes_its_default(api: httpx.Client) -> None:
    approved = run(api, """
        name: lazy-approver
        namespace: t
        tasks:
          - {name: gate, type: flow.approval, properties: {message: "ok?", timeout: 1s, default: approve}}
        """)
    assert approved["execution"]["status"] == "SUCCESS"
    assert tasks(approved)["gate"]["outputs"]["timedOut"] is True
    refused = run(api, """
        name: strict-approver
        namespace: t
        tasks:
          - {name: gate, type: flow.approval, properties: {message: "ok?", timeout: 1s}}
        """)
    assert refused["execution"]["status"] == "FAILED"
    assert refused["execution"]["error"]["name"] == "ApprovalTimedOut"


def test_a_schedule_starts_a_flow_once_per_tick(server: FlowmillServer, api: httpx.Client) -> None:
    flow(api, """
        name: ticking
        namespace: t
        inputs:
          - {name: tag, type: string, required: true}
        tasks:
          - {name: mark, type: util.set, properties: {value: "{{ inputs.tag }}"}}
        """)
    bad = api.post("/api/v1/triggers", json={"kind": "schedule", "cron": "* * * * * *", "args": {},
                                             "runnable": {"kind": "flow", "path": "f/t/ticking"}})
    assert bad.status_code == 400  # the required input is missing
    schedule = api.post("/api/v1/triggers", json={"kind": "schedule", "cron": "* * * * * *", "args": {"tag": "tick"},
                                                  "runnable": {"kind": "flow", "path": "f/t/ticking"}})
    assert schedule.status_code == 201, schedule.text
    ran = wait_for(lambda: [e for e in api.get("/api/v1/executions", params={"namespace": "t", "limit": 200}).json()["items"]
                            if e["path"] == "f/t/ticking" and e["status"] == "SUCCESS"], 15, "a tick")
    assert ran[0]["trigger"] == {"kind": "schedule", "detail": schedule.json()["id"]}
    assert ran[0]["outputs"] is None or ran[0]["outputs"] == {}
    assert api.delete(f"/api/v1/triggers/{schedule.json()['id']}").status_code == 204
