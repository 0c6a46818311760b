"""The terminal UI's client of the Flowmill HTTP API: async (httpx), one method per call the
screens make, errors in three kinds the app tells apart.

- `Disconnected`: the server did not answer (refused, reset, timed out). The app shows a banner
  and probes the server with backoff until it answers again.
- `Refused`: the server answered with an error (4xx/5xx); its message and field errors are kept
  so that a form can show them beside its fields. `NotFound` and `Unauthorized` are the two a
  screen acts on by themselves.
- Anything else is a bug and is not caught here.

A client built with a `Login` (the local admin) signs in by itself, and signs in again when its
session expires (a 401), so that a TUI left open for days keeps working.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

FINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"})
RUN_STATUSES = ("QUEUED", "RUNNING", "WAITING", "PAUSED", "SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT")
RUN_KINDS = ("script", "flow", "workflow", "task")
TRIGGER_KINDS = ("api", "cli", "route", "webhook", "schedule", "flow", "replay")
INSTANCE_STATUSES = ("queued", "running", "paused", "errored", "terminated", "complete", "waiting", "waitingForPause",
                     "unknown")


class ApiError(Exception):
    """A call to the server did not give what was asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Disconnected(ApiError):
    """The server did not answer at all."""


class Refused(ApiError):
    """The server answered with an error status; `fields` are its per-field errors
    (`{"inputs.count": "must be 100 or less"}`), when it named any."""

    def __init__(self, message: str, status: int, code: str = "", fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = dict(fields or {})


class NotFound(Refused):
    pass


class Unauthorized(Refused):
    pass


@dataclasses.dataclass(frozen=True)
class Login:
    """A username and password to sign in with (the local admin's, from the data dir)."""

    username: str
    password: str


@dataclasses.dataclass
class Page:
    """One page of a list, and the cursor of the next (None: this was the last)."""

    items: list[dict[str, Any]]
    cursor: str | None


def _path(path: str) -> str:
    """A script or flow path as a URL path: its slashes kept, anything else quoted."""
    return quote(path, safe="/")


class FlowmillClient:
    """Calls of one server, as one user, in one workspace."""

    def __init__(self, url: str, token: str | None = None, workspace: str = "main", login: Login | None = None,
                 timeout_s: float = 15.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.workspace = workspace
        self.login = login
        self.username: str | None = login.username if login else None
        self._http = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=3.0),
                                       transport=transport)
        self._workflows_base: str | None = None

    @property
    def api(self) -> str:
        return "/api/v1" if self.workspace == "main" else f"/api/v1/w/{quote(self.workspace, safe='')}"

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://").removeprefix("https://")

    async def close(self) -> None:
        await self._http.aclose()

    # -- the calls ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None, api: bool = True) -> Any:
        """The decoded answer of `method path` (under /api/v1 unless `api` is False)."""
        url = (self.api if api else "") + path
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        response = await self._send(method, url, query, body)
        if response.status_code == 401 and self.login is not None and path != "/auth/login":
            await self.sign_in()
            response = await self._send(method, url, query, body)
        if response.status_code >= 400:
            raise _refusal(method, url, response)
        if not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    async def _send(self, method: str, url: str, query: Mapping[str, Any], body: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, params=query, headers=self._headers(), json=body)
        except httpx.TransportError as error:
            raise Disconnected(f"no answer from {self.address}: {_reason(error)}") from None

    async def sign_in(self) -> None:
        """Sign in with the client's `login` and act with the session's token from now on."""
        assert self.login is not None
        answer = await self.request("POST", "/auth/login", api=False,
                                    body={"username": self.login.username, "password": self.login.password})
        self.token = answer["token"]
        self.username = self.login.username

    async def events(self, path: str) -> AsyncIterator[tuple[str, str]]:
        """(event, data) pairs of a text/event-stream answer, as they come."""
        url = self.api + path
        try:
            async with self._http.stream("GET", url, headers=self._headers(),
                                         timeout=httpx.Timeout(None, connect=3.0)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refusal("GET", url, response)
                event, data = "message", list[str]()
                async for line in response.aiter_lines():
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
        except httpx.TransportError as error:
            raise Disconnected(f"the log stream from {self.address} broke: {_reason(error)}") from None

    # -- the server ---------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """/healthz and /readyz together, with the time the round trip took."""
        started = time.perf_counter()
        healthz = await self.request("GET", "/healthz", api=False)
        try:
            ready = await self.request("GET", "/readyz", api=False)
        except Refused as refused:  # 503 while the database does not answer
            ready = {"status": "not ready", "database": refused.message}
        return {"status": healthz.get("status", "?"), "ready": ready.get("status"), "database": ready.get("database"),
                "latencyMs": (time.perf_counter() - started) * 1000}

    async def version(self) -> str:
        return str(await self.request("GET", "/api/version", api=False)).strip()

    async def whoami(self) -> dict[str, Any]:
        who: dict[str, Any] = await self.request("GET", "/api/users/whoami", api=False)
        self.username = who.get("username") or self.username
        return who

    # -- scripts and flows --------------------------------------------------------------------------

    async def scripts(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/scripts"))

    async def script(self, path: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/scripts/p/{_path(path)}"))

    async def run_script(self, path: str, args: dict[str, Any]) -> str:
        """Start a run of the script at `path`; its id."""
        return str((await self.request("POST", f"/jobs/run/p/{_path(path)}", body=args))["id"])

    async def flows(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(20):  # 2,000 flows at most, 100 a page
            page = await self.request("GET", "/flows", params={"cursor": cursor, "limit": 100})
            items += page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return items

    async def flow(self, flow_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/flows/{quote(flow_id, safe='')}"))

    async def execute_flow(self, flow_id: str, inputs: dict[str, Any]) -> str:
        """Start an execution of the flow; its run's id."""
        answer = await self.request("POST", f"/flows/{quote(flow_id, safe='')}/execute", body={"inputs": inputs})
        return str(answer["jobId"])

    # -- runs ---------------------------------------------------------------------------------------

    async def runs(self, *, status: str | None = None, kind: str | None = None, path: str | None = None,
                   trigger: str | None = None, cursor: str | None = None, limit: int = 100) -> Page:
        page = await self.request("GET", "/jobs", params={"status": status, "kind": kind, "path": path,
                                                          "trigger": trigger, "cursor": cursor, "limit": limit})
        return Page(page["items"], page.get("nextCursor"))

    async def runs_since(self, since_ms: int, most: int = 2000) -> tuple[list[dict[str, Any]], bool]:
        """Runs created since `since_ms` (newest first), and whether there were more than `most`."""
        found: list[dict[str, Any]] = []
        cursor = None
        while len(found) < most:
            page = await self.runs(cursor=cursor, limit=200)
            for run in page.items:
                if run["createdAt"] < since_ms:
                    return found, False
                found.append(run)
            if not page.cursor:
                return found, False
            cursor = page.cursor
        return found, True

    async def run(self, run_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/jobs/{quote(run_id, safe='')}"))

    async def execution(self, run_id: str) -> dict[str, Any]:
        """A flow run's execution, with its tasks."""
        return dict(await self.request("GET", f"/executions/{quote(run_id, safe='')}"))

    def log_stream(self, run_id: str) -> AsyncIterator[tuple[str, str]]:
        """The run's log lines from the first, then live ones, then its outcome (`result` or
        `error`) and `end`."""
        return self.events(f"/jobs/{quote(run_id, safe='')}/logs/stream")

    async def cancel(self, run: dict[str, Any]) -> None:
        if run["kind"] == "flow":
            await self.request("POST", f"/executions/{quote(run['id'], safe='')}/cancel")
        else:
            await self.request("POST", f"/jobs/{quote(run['id'], safe='')}/cancel")

    async def retry(self, run: dict[str, Any]) -> str:
        """Run it again: a flow's execution resumes in place from its failed task (the same
        id); anything else starts anew with the same arguments. The id of the run to watch."""
        if run["kind"] == "flow":
            await self.request("POST", f"/executions/{quote(run['id'], safe='')}/retry")
            return str(run["id"])
        return await self.run_script(run["path"], run.get("args") or {})

    async def replay(self, run_id: str, from_task: str) -> str:
        """A new execution of the same flow and inputs that keeps the outputs of the tasks before
        `from_task` and runs from it on; its id."""
        answer = await self.request("POST", f"/executions/{quote(run_id, safe='')}/replay", body={"fromTask": from_task})
        return str(answer["jobId"])

    async def resume(self, run_id: str) -> None:
        await self.request("POST", f"/jobs/{quote(run_id, safe='')}/resume")

    # -- approvals ----------------------------------------------------------------------------------

    async def approvals(self, status: str | None = "PENDING", limit: int = 200) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/approvals", params={"status": status, "limit": limit}))

    async def decide(self, approval_id: str, approve: bool, values: dict[str, Any]) -> dict[str, Any]:
        verb = "approve" if approve else "reject"
        return dict(await self.request("POST", f"/approvals/{quote(approval_id, safe='')}/{verb}", body={"values": values}))

    # -- routes and triggers ------------------------------------------------------------------------

    async def routes(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/routes"))

    async def triggers(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/triggers"))

    async def set_enabled(self, trigger: dict[str, Any], enabled: bool) -> dict[str, Any]:
        """Turn a trigger on or off. The API replaces a trigger whole, so what it is stays as read
        (a webhook's secret left out is kept by the server)."""
        keep = ("kind", "runnable", "key", "cron", "timezone", "args", "catchUp", "summary", "description")
        spec = {name: trigger[name] for name in keep if trigger.get(name) is not None}
        spec["runnable"] = {"kind": trigger["runnable"]["kind"], "path": trigger["runnable"]["path"]}
        spec["enabled"] = enabled
        return dict(await self.request("PUT", f"/triggers/{quote(trigger['id'], safe='')}", body=spec))

    # -- secrets and audit --------------------------------------------------------------------------

    async def credentials(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/credentials"))

    async def variables(self) -> list[dict[str, Any]]:
        """Variables without their values: the TUI shows names only."""
        return [{k: v for k, v in item.items() if k != "value"} for item in await self.request("GET", "/variables")]

    async def audit(self, *, actor: str | None = None, action: str | None = None, outcome: str | None = None,
                    cursor: str | None = None, limit: int = 100) -> Page:
        page = await self.request("GET", "/audit", params={"actor": actor, "action": action, "outcome": outcome,
                                                           "cursor": cursor, "limit": limit})
        next_cursor = page.get("nextCursor")
        return Page(page["items"], None if next_cursor is None else str(next_cursor))

    # -- workflow instances (DESIGN §4.4, at /api/workflows) ---------------------------------------

    async def _workflows(self) -> str:
        """Where the instances API answers (`/api/workflows`); NotFound when this server has none."""
        if self._workflows_base is None:
            for base in ("/api/workflows",):
                try:
                    answer = await self.request("GET", base, api=False)
                except NotFound:
                    continue
                if isinstance(answer, (list, dict)):
                    self._workflows_base = base
                    break
            else:
                raise NotFound("workflow instances are not available on this server", 404)
        return self._workflows_base

    async def workflows(self) -> list[str]:
        """Registered workflow names."""
        answer = await self.request("GET", await self._workflows(), api=False)
        items = answer.get("items", answer.get("workflows")) if isinstance(answer, dict) else answer
        return [str(item.get("name")) if isinstance(item, dict) else str(item) for item in items or []]

    async def instances(self, name: str, status: str | None = None, cursor: str | None = None,
                        page_size: int = 100) -> Page:
        base = await self._workflows()
        answer = await self.request("GET", f"{base}/{quote(name, safe='')}/instances", api=False,
                                    params={"status": status, "cursor": cursor, "pageSize": page_size})
        if isinstance(answer, list):
            return Page(answer, None)
        items = answer.get("items", answer.get("instances", []))
        return Page(list(items), answer.get("nextCursor") or answer.get("cursor"))

    async def instance(self, name: str, instance_id: str) -> dict[str, Any]:
        base = await self._workflows()
        return dict(await self.request("GET", f"{base}/{quote(name, safe='')}/instances/{quote(instance_id, safe='')}",
                                       api=False))

    async def instance_history(self, name: str, instance_id: str) -> dict[str, Any]:
        base = await self._workflows()
        return dict(await self.request(
            "GET", f"{base}/{quote(name, safe='')}/instances/{quote(instance_id, safe='')}/history", api=False,
            params={"includeLogs": "true", "pageSize": 100}))

    async def create_instance(self, name: str, params: Any, instance_id: str | None = None) -> dict[str, Any]:
        base = await self._workflows()
        body: dict[str, Any] = {"params": params}
        if instance_id:
            body["id"] = instance_id
        return dict(await self.request("POST", f"{base}/{quote(name, safe='')}/instances", api=False, body=body))

    async def manage_instance(self, name: str, instance_id: str, action: str) -> Any:
        """pause, resume, restart or terminate an instance."""
        assert action in ("pause", "resume", "restart", "terminate")
        base = await self._workflows()
        return await self.request(
            "POST", f"{base}/{quote(name, safe='')}/instances/{quote(instance_id, safe='')}/{action}", api=False, body={})


def _reason(error: httpx.TransportError) -> str:
    text = str(error) or type(error).__name__
    return {"ConnectError": "connection refused", "ReadTimeout": "timed out", "ConnectTimeout": "timed out",
            "RemoteProtocolError": "the connection was closed"}.get(type(error).__name__, text)


def _refusal(method: str, url: str, response: httpx.Response) -> Refused:
    code, fields = "", {}
    try:
        error = response.json()["error"]
        message = str(error.get("message") or response.reason_phrase)
        code = str(error.get("code") or "")
        details = error.get("details") or {}
        for item in (details.get("errors") or []) if isinstance(details, dict) else []:
            if isinstance(item, dict) and "path" in item:
                fields[str(item["path"])] = str(item.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text[:300] or response.reason_phrase
    kind = {404: NotFound, 401: Unauthorized}.get(response.status_code, Refused)
    return kind(message, response.status_code, code, fields)


def pretty(value: Any) -> str:
    """A JSON value as indented text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
