"""A small HTTP client of the Flowmill API, for the command line (`run`, `sync`, ...)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx

from app.errors import FlowmillError


class ApiError(FlowmillError):
    """The server refused a call; the message is the server's."""


@dataclasses.dataclass(frozen=True)
class Remote:
    url: str
    token: str | None
    workspace: str = "main"
    profile: str | None = None  # the login profile the token came from, if any

    @property
    def api(self) -> str:
        prefix = "/api/v1" if self.workspace == "main" else f"/api/v1/w/{self.workspace}"
        return self.url.rstrip("/") + prefix


class Client:
    def __init__(self, remote: Remote, timeout_s: float = 30.0) -> None:
        self.remote = remote
        headers = {"Authorization": f"Bearer {remote.token}"} if remote.token else {}
        self.http = httpx.Client(base_url=remote.api, headers=headers, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer; ApiError with the server's message otherwise."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach Flowmill at {self.remote.url}: {error}") from None
        if response.status_code >= 400:
            raise self._refusal(method, path, response)
        if not response.content:
            return None
        return response.json() if "json" in response.headers.get("content-type", "") else response.text

    def _refusal(self, method: str, path: str, response: httpx.Response) -> ApiError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        if response.status_code == 401:
            if self.remote.token:
                how = f"the token{f' of profile {self.remote.profile}' if self.remote.profile else ''} was refused"
            else:
                how = "no token was given"
            message += (f" ({how}: log in with `flowmill login {self.remote.url}`, or pass --token or set "
                        "FLOWMILL_TOKEN)")
        return ApiError(f"{method} {path}: {response.status_code} {message}")

    def events(self, path: str) -> Iterator[tuple[str, str]]:
        """(event, data) pairs of a text/event-stream answer."""
        with self.http.stream("GET", path, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise self._refusal("GET", path, response)
            event, data = "message", []
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield event, "\n".join(data)
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))


def parse_args(pairs: list[str]) -> dict[str, str | list[str]]:
    """`k=v` pairs as text, the server converting each to the type main declares (as it
    converts a query string); a key given more than once is the list of its values."""
    args: dict[str, str | list[str]] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ApiError(f"an argument is key=value, not {text!r}")
        if key not in args:
            args[key] = value
        else:
            before = args[key]
            args[key] = [*before, value] if isinstance(before, list) else [before, value]
    return args
