"""The load generator: wrk, with a Lua script per scenario, and its report parsed."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclasses.dataclass(frozen=True)
class Load:
    """One kind of request, sent over and over."""

    method: str
    path: str  # `{n}` in it becomes a key unique to each request of the run
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Measure:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def failed(self) -> bool:
        """Some responses were not 2xx/3xx or some sockets failed: the figures are suspect."""
        return bool(self.non_2xx or self.socket_errors)

    def as_json(self) -> dict[str, float]:
        """The figures under the report's names."""
        return {"rps": round(self.rps, 1), "p50Ms": round(self.p50_ms, 3), "p99Ms": round(self.p99_ms, 3),
                "requests": self.requests, "non2xx": self.non_2xx, "socketErrors": self.socket_errors}


def wrk_path() -> str:
    """Where wrk is; exits with a one-line message if it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found: install it with 'apt-get install wrk'")
    return path


def lua(load: Load, run_id: str) -> str:
    """The wrk script for `load`. With `{n}` in the path, every request gets its own key:
    the run's id, the wrk thread's number and a counter of that thread."""
    lines = [f"wrk.method = {json.dumps(load.method)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in load.headers]
    if load.body is not None:
        lines.append(f"wrk.body = {json.dumps(load.body)}")
    if "{n}" not in load.path:
        # No request() function: wrk formats the request once and resends it (cheapest).
        lines.append(f"wrk.path = {json.dumps(load.path)}")
        return "\n".join(lines) + "\n"
    prefix, _, suffix = load.path.partition("{n}")
    # setup() runs in wrk's main Lua state; thread:set() writes the global `tid` into each
    # thread's own state, which request() then reads (so `tid` must not be a local).
    return "\n".join(lines) + f"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
function request()
  counter = counter + 1
  return wrk.format(nil, {json.dumps(prefix + run_id + "-")} .. tid .. "-" .. counter .. {json.dumps(suffix)})
end
"""


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _find(pattern: str, report: str) -> str:
    match = re.search(pattern, report, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk's report has no {pattern!r}:\n{report}")
    return match.group(1)


def parse(report: str) -> Measure:
    """Requests/s, p50, p99 and the error counts of a `wrk --latency` report."""
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    return Measure(
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", report)),
        p50_ms=_ms(_find(r"^\s+50%\s+(\S+)", report)),
        p99_ms=_ms(_find(r"^\s+99%\s+(\S+)", report)),
        requests=int(_find(r"(\d+) requests in", report)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run(base_url: str, load: Load, connections: int, seconds: float) -> Measure:
    """Drive `load` at `connections` for `seconds` with wrk and return what it measured."""
    with tempfile.TemporaryDirectory(prefix="flowmill-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(lua(load, secrets.token_hex(4)))  # a fresh id: no key repeats a past run's
        threads = max(1, min(2, connections))
        command = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                   "--timeout", "10s", "-s", str(script), base_url]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse(done.stdout)
