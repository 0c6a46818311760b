"""The core plugins, each run with a fake TaskContext that records what they ask of the server.
(`http.request` against a real server: test_plugins_http.py; the registry itself:
test_plugins_registry.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

try:
    import app.flows.durations  # noqa: F401  (the flow language's parser, lang's branch)
except ImportError:  # not merged on this branch yet: a minimal private stand-in, for these tests only
    def _parse_duration(value: str | int | float) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value)
        if not parts or "".join(n + u for n, u in parts) != value.strip():
            raise ValueError(f"{value!r} is not a duration")
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
        return sum(float(n) * scale[u] for n, u in parts)

    _stand_in = types.ModuleType("app.flows.durations")
    _stand_in.parse_duration = _parse_duration  # type: ignore[attr-defined]
    sys.modules["app.flows.durations"] = _stand_in

from app.plugins import Registry, TaskFailed, default_registry

BRIEF_IDS = {
    "util.log", "util.set", "util.sleep", "util.assert", "util.noop", "util.uuid", "util.now",
    "http.request", "kv.get", "kv.set", "kv.delete", "script.python", "script.shell", "flowmill.run_script",
    "flow.sequential", "flow.parallel", "flow.if", "flow.switch", "flow.foreach", "flow.loop_until",
    "flow.subflow", "flow.sleep", "flow.approval", "flow.fail",
}
TASK_LIST_KEYS = {"tasks", "then", "else", "cases"}


@dataclasses.dataclass
class FakeContext:
    """A TaskContext that records what plugins ask: logs, an in-memory KV, stubs for user code."""

    workspace: str = "main"
    execution_id: str = "exec-1"
    task_name: str = "task"
    storage_dir: Path = Path("/nonexistent")
    logs: list[str] = dataclasses.field(default_factory=list)
    kv: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
    python: Callable[..., Any] | None = None  # the stub run_python calls: (code, path, args, timeout_s) -> result
    script: Callable[..., dict[str, Any]] | None = None  # the stub run_script calls
    calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cancel: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def log(self, message: str) -> None:
        self.logs.append(message)

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    async def wait_cancelled(self) -> None:
        await self.cancel.wait()

    async def kv_get(self, namespace: str, key: str) -> Any:
        return self.kv.get((namespace, key))

    async def kv_set(self, namespace: str, key: str, value: Any) -> None:
        self.kv[(namespace, key)] = value

    async def kv_delete(self, namespace: str, key: str) -> bool:
        return self.kv.pop((namespace, key), None) is not None

    async def credential(self, name: str) -> str:
        return f"secret-of-{name}"

    async def run_python(self, code: str | None, path: str | None, args: dict[str, Any], timeout_s: float | None) -> Any:
        self.calls.append({"code": code, "path": path, "args": args, "timeout_s": timeout_s})
        assert self.python is not None, "this test gave no run_python stub"
        return await asyncio.to_thread(self.python, code, path, args, timeout_s)

    async def run_script(self, path: str, args: dict[str, Any], wait: bool) -> dict[str, Any]:
        self.calls.append({"path": path, "args": args, "wait": wait})
        assert self.script is not None, "this test gave no run_script stub"
        return self.script(path, args, wait)


def exec_main(code: str | None, path: str | None, args: dict[str, Any], timeout_s: float | None) -> Any:
    """A run_python stand-in that runs inline code here (the real one forks a walled-off child)."""
    assert code is not None and path is None
    namespace: dict[str, Any] = {}
    exec(compile(code, "<task>", "exec"), namespace)
    return namespace["main"](**args)


REGISTRY = default_registry()


def run(type_id: str, properties: dict[str, Any], ctx: FakeContext | None = None,
        registry: Registry = REGISTRY) -> dict[str, Any]:
    return asyncio.run(registry.run(type_id, properties, ctx or FakeContext()))


def failure(type_id: str, properties: dict[str, Any], ctx: FakeContext | None = None,
            registry: Registry = REGISTRY) -> TaskFailed:
    with pytest.raises(TaskFailed) as raised:
        run(type_id, properties, ctx, registry)
    return raised.value


# -- the catalogue ---------------------------------------------------------------------------------


def test_the_catalogue_is_the_briefs_and_every_schema_is_valid_2020_12() -> None:
    assert {m.id for m in REGISTRY.all()} == BRIEF_IDS
    assert REGISTRY.categories() == ["flow", "flowmill", "http", "kv", "script", "util"]
    for manifest in REGISTRY.all():
        Draft202012Validator.check_schema(manifest.input_schema)
        Draft202012Validator.check_schema(manifest.output_schema)
        assert manifest.id.startswith(manifest.category + ".") and manifest.name and manifest.description
        assert manifest.role == "executor"


def test_flow_types_are_control_manifests_without_their_task_lists() -> None:
    for manifest in REGISTRY.all():
        assert manifest.control == (manifest.category == "flow")
        if manifest.control:
            assert REGISTRY.plugin(manifest.id).run is None  # type: ignore[union-attr]
            assert not TASK_LIST_KEYS & set(manifest.input_schema.get("properties", {}))
    assert "default" not in REGISTRY.get("flow.switch").input_schema["properties"]  # type: ignore[union-attr]
    assert failure("flow.if", {"condition": True}).name == "NotRunnable"
    assert failure("no.such", {}).name == "UnknownPlugin"
    assert REGISTRY.get("no.such") is None and REGISTRY.plugin("no.such") is None


# -- util ------------------------------------------------------------------------------------------


def test_util_log_writes_the_message_with_its_level() -> None:
    ctx = FakeContext()
    assert run("util.log", {"message": "hello"}, ctx) == {}
    run("util.log", {"message": {"n": [1, "é"]}, "level": "warning"}, ctx)
    assert ctx.logs == ["hello", 'WARNING {"n": [1, "é"]}']
    assert failure("util.log", {"message": "x", "level": "loud"}).name == "InvalidProperties"
    typo = failure("util.log", {"mesage": "typo"})
    assert typo.name == "InvalidProperties" and "('mesage' was unexpected)" in typo.message


def test_util_set_noop_uuid_now() -> None:
    assert run("util.set", {"value": [1, {"a": None}]}) == {"value": [1, {"a": None}]}
    assert run("util.noop", {}) == {}
    first, second = run("util.uuid", {})["uuid"], run("util.uuid", {})["uuid"]
    assert uuid.UUID(first).version == 4 and first != second
    before = int(time.time() * 1000)
    now = run("util.now", {})
    assert before - 5 <= now["epochMs"] <= int(time.time() * 1000) + 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now["now"])
    assert failure("util.noop", {"extra": 1}).name == "InvalidProperties"


def test_util_sleep_waits_and_stops_at_once_on_cancel() -> None:
    started = time.perf_counter()
    assert run("util.sleep", {"duration": "50ms"}) == {}
    assert 0.04 <= time.perf_counter() - started < 2

    async def cancelled_meanwhile() -> float:
        ctx = FakeContext()
        asyncio.get_running_loop().call_later(0.05, ctx.cancel.set)
        started = time.perf_counter()
        with pytest.raises(TaskFailed) as raised:
            await REGISTRY.run("util.sleep", {"duration": "1m"}, ctx)
        assert raised.value.name == "Cancelled"
        return time.perf_counter() - started

    assert asyncio.run(cancelled_meanwhile()) < 1
    assert failure("util.sleep", {"duration": "2 fortnights"}).name == "InvalidProperties"
    assert failure("util.sleep", {"duration": "2d"}).name == "InvalidProperties"  # past MAX_SLEEP_S
    assert failure("util.sleep", {"duration": -1}).name == "InvalidProperties"


@pytest.mark.parametrize("condition", [True, 1, "yes", "true", [0], {"a": 1}])
def test_util_assert_passes_when_true(condition: Any) -> None:
    assert run("util.assert", {"condition": condition}) == {}
    assert run("util.assert", {"that": condition}) == {}


@pytest.mark.parametrize("condition", [False, 0, None, "", "false", "False", " no ", "0", [], {}])
def test_util_assert_fails_when_false(condition: Any) -> None:
    failed = failure("util.assert", {"condition": condition, "message": "n must be > 2"})
    assert (failed.name, failed.message) == ("AssertionFailed", "n must be > 2")
    assert failure("util.assert", {"that": condition}).name == "AssertionFailed"


def test_util_assert_takes_condition_or_that() -> None:
    assert failure("util.assert", {}).name == "InvalidProperties"
    assert failure("util.assert", {"condition": True, "that": True}).name == "InvalidProperties"


# -- kv --------------------------------------------------------------------------------------------


def test_kv_set_get_delete() -> None:
    ctx = FakeContext()
    assert run("kv.get", {"namespace": "ns", "key": "k"}, ctx) == {"value": None, "found": False}
    assert run("kv.get", {"namespace": "ns", "key": "k", "default": 7}, ctx) == {"value": 7, "found": False}
    assert run("kv.set", {"namespace": "ns", "key": "k", "value": {"n": [1]}}, ctx) == {}
    assert ctx.kv == {("ns", "k"): {"n": [1]}}
    assert run("kv.get", {"namespace": "ns", "key": "k", "default": 7}, ctx) == {"value": {"n": [1]}, "found": True}
    assert run("kv.delete", {"namespace": "ns", "key": "k"}, ctx) == {"deleted": True}
    assert run("kv.delete", {"namespace": "ns", "key": "k"}, ctx) == {"deleted": False}
    assert failure("kv.set", {"namespace": "ns", "key": "k"}).name == "InvalidProperties"  # no value
    assert failure("kv.get", {"namespace": "", "key": "k"}).name == "InvalidProperties"


# -- script ----------------------------------------------------------------------------------------


def test_script_python_hands_code_or_path_to_run_python() -> None:
    ctx = FakeContext(python=lambda code, path, args, timeout_s: {"got": args})
    assert run("script.python", {"code": "def main(x): ...", "args": {"x": 1}, "timeout": "2m"}, ctx) == \
        {"result": {"got": {"x": 1}}}
    assert run("script.python", {"path": "f/a/b"}, ctx) == {"result": {"got": {}}}
    assert ctx.calls == [{"code": "def main(x): ...", "path": None, "args": {"x": 1}, "timeout_s": 120.0},
                         {"code": None, "path": "f/a/b", "args": {}, "timeout_s": None}]
    assert failure("script.python", {}).name == "InvalidProperties"
    assert failure("script.python", {"code": "x", "path": "f/a/b"}).name == "InvalidProperties"


def test_script_python_failures_are_the_tasks() -> None:
    def fails(*_: Any) -> Any:
        raise TaskFailed("ZeroDivisionError", "division by zero")

    assert failure("script.python", {"code": "def main(): 1/0"}, FakeContext(python=fails)).name == "ZeroDivisionError"


def test_script_shell_runs_a_fixed_program_with_the_command_as_an_argument() -> None:
    ctx = FakeContext(python=exec_main)
    done = run("script.shell", {"command": "echo out; echo err >&2; printf %s \"$GREETING\"",
                                "env": {"GREETING": "hé"}, "timeout": "20s"}, ctx)
    assert done == {"exitCode": 0, "stdout": "out\nhé", "stderr": "err\n"}
    call = ctx.calls[0]
    assert "echo" not in call["code"] and call["path"] is None  # the command is data, never code
    assert call["args"] == {"command": "echo out; echo err >&2; printf %s \"$GREETING\"",
                            "env": {"GREETING": "hé"}, "timeout_s": 20.0}
    assert call["timeout_s"] > 20  # the child outlives the command's deadline to report it


def test_script_shell_exit_codes() -> None:
    failed = failure("script.shell", {"command": "echo boom >&2; exit 3"}, FakeContext(python=exec_main))
    assert failed.name == "ShellFailed" and "3" in failed.message and "boom" in failed.message
    allowed = run("script.shell", {"command": "exit 3", "allowFailedExit": True}, FakeContext(python=exec_main))
    assert allowed == {"exitCode": 3, "stdout": "", "stderr": ""}


def test_script_shell_timeout_kills_the_command_and_what_it_started() -> None:
    started = time.perf_counter()
    failed = failure("script.shell", {"command": "sleep 30 & sleep 30; wait", "timeout": "300ms"},
                     FakeContext(python=exec_main))
    assert failed.name == "Timeout" and time.perf_counter() - started < 5


# -- flowmill --------------------------------------------------------------------------------------


def test_flowmill_run_script() -> None:
    ctx = FakeContext(script=lambda path, args, wait: {"jobId": "j1", "status": "SUCCESS", "result": args["n"] * 2})
    assert run("flowmill.run_script", {"path": "f/a/double", "args": {"n": 21}}, ctx) == \
        {"jobId": "j1", "status": "SUCCESS", "result": 42}
    queued = FakeContext(script=lambda path, args, wait: {"jobId": "j2", "status": "QUEUED"})
    assert run("flowmill.run_script", {"path": "f/a/b", "wait": False}, queued) == {"jobId": "j2", "status": "QUEUED"}
    assert queued.calls == [{"path": "f/a/b", "args": {}, "wait": False}]
    broken = FakeContext(script=lambda path, args, wait: {"jobId": "j3", "status": "FAILED", "error": "boom"})
    failed = failure("flowmill.run_script", {"path": "f/a/b"}, broken)
    assert failed.name == "ScriptFailed" and "j3" in failed.message and "boom" in failed.message
