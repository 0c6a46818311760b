"""Plugin tasks of a flow: their properties rendered, their run retried and timed out, and the
context through which a plugin reaches the server (`app.plugins.registry.TaskContext`).

A plugin's run is awaited on the event loop (a plain function runs on a thread: the registry
decides). Its failure is the task's: retried by the task's `retry` policy (`constant`,
`exponential` or `random` waits, `attempts` in all, within `maxDuration`), then recorded. The
wait between attempts is spent in the turn (cancellable); an execution interrupted during it
starts the task again from its first attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.flows.model import Task
from app.flows.runner import Execution, FlowRunner, Scope, TaskFailure
from app.plugins.registry import Registry, TaskFailed
from app.services.actor import at_least


class FlowTaskContext:
    """What one task of one execution may use of the server."""

    def __init__(self, ex: Execution, task: Task, key: str, services: TaskServices) -> None:
        self.workspace = ex.job.workspace
        self.execution_id = ex.job.id
        self.task_name = task.name
        self.key = key
        self._ex = ex
        self._services = services
        self._cancelled = asyncio.Event()
        self.storage_dir = services.storage_root / ex.job.workspace / ex.job.id

    def log(self, message: str) -> None:
        self._ex.log(self.task_name, str(message))

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def wait_cancelled(self) -> None:
        # A cancelled execution cancels the coroutine awaiting this: nothing else sets it.
        await self._cancelled.wait()

    async def kv_get(self, namespace: str, key: str) -> Any:
        return await self._services.kv_get(self._ex, namespace, key)

    async def kv_set(self, namespace: str, key: str, value: Any) -> None:
        await self._services.kv_set(self._ex, namespace, key, value)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self._services.kv_delete(self._ex, namespace, key)

    async def credential(self, name: str) -> str:
        return await self._services.credential(self._ex, name)

    async def run_python(self, code: str | None, path: str | None, args: dict[str, Any], timeout_s: float | None) -> Any:
        return await self._services.run_python(self._ex, self.task_name, code, path, args, timeout_s)

    async def run_script(self, path: str, args: dict[str, Any], wait: bool) -> dict[str, Any]:
        return await self._services.run_script(self._ex, path, args, wait)


class TaskServices:
    """The server's side of `FlowTaskContext`, set up by app/services/executions.py."""

    storage_root: Path
    kv_get: Callable[[Execution, str, str], Awaitable[Any]]
    kv_set: Callable[[Execution, str, str, Any], Awaitable[None]]
    kv_delete: Callable[[Execution, str, str], Awaitable[bool]]
    credential: Callable[[Execution, str], Awaitable[str]]
    run_python: Callable[[Execution, str, str | None, str | None, dict[str, Any], float | None], Awaitable[Any]]
    run_script: Callable[[Execution, str, dict[str, Any], bool], Awaitable[dict[str, Any]]]


class PluginTasks:
    """Runs plugin tasks for a runner (its `plugin_body`)."""

    def __init__(self, runner: FlowRunner, registry: Registry, services: TaskServices) -> None:
        self.runner = runner
        self.registry = registry
        self.services = services

    async def __call__(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        manifest = self.registry.get(task.type)
        if manifest is None:
            raise TaskFailure(key, {"name": "UnknownPlugin", "message": f"no plugin {task.type}"})
        if not at_least(ex.role, manifest.role):
            raise TaskFailure(key, {"name": "Forbidden", "message": (
                f"{task.type} needs the {manifest.role} role; this execution acts as {ex.identity} ({ex.role})")})
        properties = await self.runner.render(ex, task.properties, scope)
        policy = task.retry
        first = time.monotonic()
        attempt = 1
        record = ex.live.get(key)
        while True:
            if record is not None:
                record.attempts = attempt
            outputs, error = await self._attempt(ex, task, key, properties)
            if error is None:
                return outputs
            if policy is None or attempt >= policy.attempts:
                raise TaskFailure(key, error)
            delay = policy.delay(attempt)
            if policy.max_duration_s is not None and time.monotonic() - first + delay > policy.max_duration_s:
                raise TaskFailure(key, {**error, "message": f"{error.get('message', '')} (retries stopped: maxDuration)"})
            ex.log(task.name, f"attempt {attempt} failed ({error.get('name')}: {error.get('message')}); "
                              f"retrying in {delay:g} s")
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, ex: Execution, task: Task, key: str, properties: Any) -> tuple[Any, dict[str, Any] | None]:
        """One attempt: (its outputs, None), or (None, its error)."""
        context = FlowTaskContext(ex, task, key, self.services)
        try:
            run = self.registry.run(task.type, properties if isinstance(properties, dict) else {}, context)
            return await (asyncio.wait_for(run, task.timeout_s) if task.timeout_s else run), None
        except TaskFailed as failed:
            return None, {"name": failed.name, "message": failed.message}
        except asyncio.TimeoutError:
            return None, {"name": "Timeout", "message": f"the task took longer than its timeout of {task.timeout_s:g} s"}
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a plugin's own fault: the task fails, the server goes on
            return None, {"name": type(error).__name__, "message": str(error)}
