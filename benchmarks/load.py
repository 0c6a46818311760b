"""The load generator: wrk, with a Lua script per scenario, and its report parsed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclasses.dataclass(frozen=True)
class Load:
    method: str
    path: str  # `{n}` in it becomes a number unique to each request
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Measure:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    def as_json(self) -> dict[str, float]:
        return {"rps": round(self.rps, 1), "p50Ms": round(self.p50_ms, 3), "p99Ms": round(self.p99_ms, 3),
                "requests": self.requests, "non2xx": self.non_2xx, "socketErrors": self.socket_errors}


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found: install it with 'apt-get install wrk'")
    return path


def _lua(load: Load) -> str:
    headers = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in load.headers)
    body = f"wrk.body = {json.dumps(load.body)}" if load.body is not None else ""
    prefix, _, suffix = load.path.partition("{n}")
    unique = "{n}" in load.path
    # Each wrk thread has its own Lua state: the thread id keeps the counters apart.
    return f"""
wrk.method = {json.dumps(load.method)}
{headers}
{body}
local counter = 0
local tid = 0
setup = function(thread) tid = tid + 1; thread:set("tid", tid) end
request = function()
  counter = counter + 1
  local path = {json.dumps(prefix)}{' .. tostring(tid) .. "-" .. tostring(counter) .. ' + json.dumps(suffix) if unique else ''}
  return wrk.format(nil, path)
end
"""


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(report: str) -> Measure:
    """Requests/s, p50, p99 and the error counts of a `wrk --latency` report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", report, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", report, re.M).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    return Measure(
        rps, p50, p99, requests, int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run(base_url: str, load: Load, connections: int, seconds: float) -> Measure:
    """Drive `load` at `connections` for `seconds` with wrk and return what it measured."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(_lua(load))
        threads = max(1, min(2, connections))
        command = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                   "--timeout", "10s", "-s", str(script), base_url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse(done.stdout)
