"""`http.request` against a real HTTP server on 127.0.0.1 (the standard library's, in a thread):
methods, JSON and form bodies, headers, query, auth, timeouts, 4xx/5xx, retries, limits."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.plugins import TaskFailed
from app.plugins import http as http_plugin
from tests.support import free_port
from tests.unit.test_plugins import REGISTRY, FakeContext, failure, run

# How many times each /flaky/<key> was asked (it answers 503 until the third time).
_FLAKY: collections.Counter[str] = collections.Counter()


class Handler(BaseHTTPRequestHandler):
    """/echo: the request as JSON; /text; /status/<n>; /slow; /flaky/<key>; /big; /redirect; /problem."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        parts = url.path.strip("/").split("/")
        if parts[0] == "echo":
            echoed = {"method": self.command, "path": url.path, "query": urllib.parse.parse_qs(url.query),
                      "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            self.answer(200, json.dumps(echoed).encode(), "application/json", {"X-Echo": "yes"})
        elif parts[0] == "text":
            self.answer(200, "héllo".encode())
        elif parts[0] == "status":
            self.answer(int(parts[1]), f"status {parts[1]} body".encode())
        elif parts[0] == "slow":
            time.sleep(2)
            self.answer(200, b"late")
        elif parts[0] == "flaky":
            _FLAKY[parts[1]] += 1
            if _FLAKY[parts[1]] < 3:
                self.answer(503, b"try later")
            else:
                self.answer(200, b'{"ok": true}', "application/problem+json")
        elif parts[0] == "big":
            self.answer(200, b"x" * 5000)
        elif parts[0] == "redirect":
            self.answer(302, b"", headers={"Location": "/echo?from=redirect"})
        elif parts[0] == "notjson":
            self.answer(200, b"{not json", "application/json")
        else:
            self.answer(404, b"no such page")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_get_json_with_headers_and_query(base: str) -> None:
    ctx = FakeContext()
    out = run("http.request", {"url": f"{base}/echo?a=1", "headers": {"X-Test": "t"}, "query": {"b": 2, "c": True}}, ctx)
    assert out["status"] == 200 and out["headers"]["x-echo"] == "yes"
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["method"] == "GET" and out["body"]["headers"]["x-test"] == "t"
    assert out["body"]["query"] == {"a": ["1"], "b": ["2"], "c": ["true"]}
    assert len(ctx.logs) == 1 and ctx.logs[0].startswith(f"GET {base}/echo?a=1") and ": 200 (" in ctx.logs[0]


def test_post_json_and_form_and_raw_bodies(base: str) -> None:
    sent = run("http.request", {"url": f"{base}/echo", "method": "POST", "json": {"n": [1, "é"]}})["body"]
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"n": [1, "é"]}
    assert sent["headers"]["content-type"] == "application/json"
    form = run("http.request", {"url": f"{base}/echo", "method": "PUT", "form": {"a": "1 2", "b": 3}})["body"]
    assert form["method"] == "PUT" and urllib.parse.parse_qs(form["body"]) == {"a": ["1 2"], "b": ["3"]}
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    raw = run("http.request", {"url": f"{base}/echo", "method": "PATCH", "body": "<x/>",
                               "headers": {"Content-Type": "application/xml"}})["body"]
    assert (raw["body"], raw["headers"]["content-type"]) == ("<x/>", "application/xml")
    null = run("http.request", {"url": f"{base}/echo", "method": "DELETE", "json": None})["body"]
    assert null["method"] == "DELETE" and null["body"] == "null"


def test_one_body_at_most(base: str) -> None:
    failed = failure("http.request", {"url": f"{base}/echo", "json": {}, "form": {"a": "b"}})
    assert failed.name == "InvalidProperties" and "properties.form" in failed.message


def test_basic_and_bearer_auth(base: str) -> None:
    basic = run("http.request", {"url": f"{base}/echo", "auth": {"type": "basic", "username": "al", "password": "pw:1"}})
    assert basic["body"]["headers"]["authorization"] == "Basic " + base64.b64encode(b"al:pw:1").decode()
    bearer = run("http.request", {"url": f"{base}/echo", "auth": {"type": "bearer", "token": "t0k"}})
    assert bearer["body"]["headers"]["authorization"] == "Bearer t0k"
    assert failure("http.request", {"url": base, "auth": {"type": "bearer"}}).name == "InvalidProperties"


def test_text_json_and_other_bodies(base: str) -> None:
    assert run("http.request", {"url": f"{base}/text"})["body"] == "héllo"
    assert run("http.request", {"url": f"{base}/notjson"})["body"] == "{not json"
    head = run("http.request", {"url": f"{base}/echo", "method": "HEAD"})
    assert head["status"] == 200 and head["body"] == ""
    assert run("http.request", {"url": f"{base}/redirect"})["body"]["query"] == {"from": ["redirect"]}
    assert run("http.request", {"url": f"{base}/redirect", "followRedirects": False})["status"] == 302


def test_4xx_and_5xx_fail_the_task_unless_allowed(base: str) -> None:
    failed = failure("http.request", {"url": f"{base}/status/404"})
    assert failed.name == "HttpStatus" and failed.message == f"GET {base}/status/404 answered 404: status 404 body"
    assert failure("http.request", {"url": f"{base}/status/500"}).name == "HttpStatus"
    allowed = run("http.request", {"url": f"{base}/status/500", "allowFailedStatus": True})
    assert (allowed["status"], allowed["body"]) == (500, "status 500 body")
    assert run("http.request", {"url": f"{base}/status/404", "expectStatus": [200, 404]})["status"] == 404
    assert failure("http.request", {"url": f"{base}/text", "expectStatus": 201}).name == "UnexpectedStatus"


def test_timeout_is_the_whole_exchanges(base: str) -> None:
    started = time.perf_counter()
    failed = failure("http.request", {"url": f"{base}/slow", "timeout": "300ms"})
    assert failed.name == "Timeout" and "0.3 s" in failed.message
    assert time.perf_counter() - started < 1.5


def test_5xx_is_retried_when_asked(base: str) -> None:
    ctx = FakeContext()
    out = run("http.request", {"url": f"{base}/flaky/a", "retries": 2, "retryInterval": "10ms"}, ctx)
    assert out == {"status": 200, "headers": out["headers"], "body": {"ok": True}}  # +json is JSON
    assert _FLAKY["a"] == 3 and sum("trying again" in line for line in ctx.logs) == 2
    failed = failure("http.request", {"url": f"{base}/flaky/b", "retries": 1, "retryInterval": 0})
    assert failed.name == "HttpStatus" and "503" in failed.message and _FLAKY["b"] == 2
    failure("http.request", {"url": f"{base}/status/404", "retries": 3, "retryInterval": 0})  # a 4xx is not retried


def test_connect_errors_are_retried_when_asked() -> None:
    ctx = FakeContext()
    failed = failure("http.request", {"url": f"http://127.0.0.1:{free_port()}/", "retries": 2, "retryInterval": 0}, ctx)
    assert failed.name == "ConnectError"
    assert [line.split(":")[0] for line in ctx.logs] == ["attempt 1 of 3", "attempt 2 of 3"]


def test_cancel_stops_the_wait_to_retry() -> None:
    async def scenario() -> float:
        ctx = FakeContext()
        asyncio.get_running_loop().call_later(0.1, ctx.cancel.set)
        started = time.perf_counter()
        with pytest.raises(TaskFailed) as raised:
            await REGISTRY.run("http.request", {"url": f"http://127.0.0.1:{free_port()}/", "retries": 3,
                                                "retryInterval": "1m"}, ctx)
        assert raised.value.name == "Cancelled"
        return time.perf_counter() - started

    assert asyncio.run(scenario()) < 2


def test_a_large_answer_is_refused_not_cut(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_plugin, "MAX_BODY_BYTES", 1000)
    assert failure("http.request", {"url": f"{base}/big"}).name == "ResponseTooLarge"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://", "127.0.0.1/echo",
                                 "javascript:alert(1)", "http://[::1"])
def test_only_http_urls(url: str) -> None:
    assert failure("http.request", {"url": url}).name == "InvalidUrl"


def test_bad_properties(base: str) -> None:
    for properties in ({"url": base, "method": "FETCH"}, {"url": base, "retries": 11}, {"url": base, "timeout": "soon"},
                       {"url": base, "headers": {"X": 1}}, {"url": base, "expectStatus": 99}):
        assert failure("http.request", properties).name == "InvalidProperties", properties
