"""The control-flow task types (`flow.*`), carried out by the runner itself.

Each is a coroutine `(execution, task, scope, key) -> outputs` that the runner awaits like a
plugin's run. Nested tasks run through `FlowRunner.run_tasks`, so each of them is checkpointed
on its own; a loop's iterations key their tasks `<loop>[<i>].<task>`. A type that must wait
(`flow.sleep`, `flow.approval`, `flow.subflow` with `wait`) stores what it started, then raises
`Suspend`; the next turn finds it and either goes on or waits again. Parallel branches each run
until done or waiting: the turn waits for what they wait for together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from app.engine.executor import now_ms
from app.flows.durations import parse_duration
from app.flows.model import Task
from app.flows.runner import Execution, FlowRunner, Scope, Suspend, TaskFailure

MAX_ITEMS = 10_000  # iterations of one foreach


def _fail(key: str, name: str, message: str) -> TaskFailure:
    return TaskFailure(key, {"name": name, "message": message})


def _duration(key: str, value: Any, what: str) -> float:
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as error:
        raise _fail(key, "InvalidProperty", f"{what}: {error}") from None


async def _together(jobs: list[Callable[[], Coroutine[Any, Any, None]]], limit: int | None) -> None:
    """Run `jobs` at once (at most `limit` at a time). A failure stops the others and is raised;
    otherwise, when some wait, the turn waits for all they wait for."""
    gate = asyncio.Semaphore(limit) if limit else None

    async def one(job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if gate is None:
            return await job()
        async with gate:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failure = next((t.exception() for t in tasks if t.done() and not t.cancelled()
                        and t.exception() is not None and not isinstance(t.exception(), Suspend)), None)
        if failure is not None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise failure
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failure = next((t.exception() for t in tasks if not isinstance(t.exception(), (Suspend, type(None)))), None)
    if failure is not None:
        raise failure
    waits = [t.exception() for t in tasks if isinstance(t.exception(), Suspend)]
    if waits:
        wait = waits[0]
        for other in waits[1:]:
            wait = wait.merge(other)  # type: ignore[arg-type]
        raise wait  # type: ignore[misc]


def _concurrency(key: str, value: Any, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, "InvalidProperty", "concurrency is a whole number, 0 for no limit")
    return value or None


class Control:
    """The `flow.*` types, bound to one runner."""

    def __init__(self, runner: FlowRunner, start_subflow: Callable[..., Awaitable[str]],
                 subflow_state: Callable[[str], Awaitable[dict[str, Any] | None]],
                 open_approval: Callable[..., Awaitable[str]],
                 approval_state: Callable[[str], Awaitable[dict[str, Any] | None]],
                 close_approval: Callable[[str, str], Awaitable[None]]) -> None:
        self.runner = runner
        self.start_subflow = start_subflow
        self.subflow_state = subflow_state
        self.open_approval = open_approval
        self.approval_state = approval_state
        self.close_approval = close_approval

    def types(self) -> dict[str, Callable[[Execution, Task, Scope, str], Awaitable[Any]]]:
        return {
            "flow.sequential": self.sequential, "flow.parallel": self.parallel, "flow.if": self.if_,
            "flow.switch": self.switch, "flow.foreach": self.foreach, "flow.loop_until": self.loop_until,
            "flow.subflow": self.subflow, "flow.sleep": self.sleep, "flow.approval": self.approval,
            "flow.fail": self.fail,
        }

    async def _props(self, ex: Execution, task: Task, scope: Scope) -> dict[str, Any]:
        value = await self.runner.render(ex, task.properties, scope)
        return value if isinstance(value, dict) else {}

    async def sequential(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        await self.runner.run_tasks(ex, task.children.get("tasks", ()), scope, _prefix(key, task))
        return {}

    async def parallel(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        props = await self._props(ex, task, scope)
        prefix = _prefix(key, task)
        jobs = [(lambda child=child: self.runner.run_task(ex, child, scope, prefix))
                for child in task.children.get("tasks", ()) if not child.disabled]
        await _together(jobs, _concurrency(key, props.get("concurrency"), None))
        return {}

    async def if_(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        chosen = ex.step(f"branch:{key}")
        if chosen is None:
            condition = task.properties.get("condition")
            if isinstance(condition, str):
                chosen = "then" if await self.runner.templates.condition(condition, scope.data, self.runner.lookup_for(ex)) \
                    else "else"
            else:
                chosen = "then" if condition else "else"
            await self.runner.checkpoint(ex, f"branch:{key}", chosen)
        await self.runner.run_tasks(ex, task.children.get(chosen, ()), scope, _prefix(key, task))
        return {"branch": chosen if chosen in task.children else None}

    async def switch(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        chosen = ex.step(f"branch:{key}")
        if chosen is None:
            props = await self._props(ex, task, scope)
            value = props.get("value")
            text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
            chosen = f"case:{text}" if f"case:{text}" in task.children else "default"
            await self.runner.checkpoint(ex, f"branch:{key}", chosen)
        await self.runner.run_tasks(ex, task.children.get(chosen, ()), scope, _prefix(key, task))
        return {"case": chosen[5:] if chosen.startswith("case:") else "default"}

    async def foreach(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        props = await self._props(ex, task, scope)
        items = props.get("items")
        if isinstance(items, str):
            try:
                items = msgspec.json.decode(items)
            except msgspec.DecodeError:
                pass
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, list):
            raise _fail(key, "InvalidProperty", f"items must be a list, not {type(items).__name__}")
        if len(items) > MAX_ITEMS:
            raise _fail(key, "InvalidProperty", f"a foreach takes at most {MAX_ITEMS} items")
        children = task.children.get("tasks", ())
        iterations: list[dict[str, Any]] = [{} for _ in items]

        def iteration(index: int, item: Any) -> Callable[[], Coroutine[Any, Any, None]]:
            async def run() -> None:
                inner = scope.child(item=item, index=index)
                await self.runner.run_tasks(ex, children, inner, f"{key}[{index}].")
                iterations[index] = {child.name: inner.outputs.get(child.name) for child in children
                                     if child.name in inner.outputs}
                scope.outputs.update(iterations[index])
            return run

        jobs = [iteration(index, item) for index, item in enumerate(items)]
        await _together(jobs, _concurrency(key, props.get("concurrency"), 1))
        return {"iterations": iterations}

    async def loop_until(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        props = {k: v for k, v in task.properties.items() if k != "condition"}
        props = await self.runner.render(ex, props, scope)
        interval = _duration(key, props.get("interval", 0), "interval")
        most = props.get("maxIterations", 100)
        if isinstance(most, bool) or not isinstance(most, int) or most < 1:
            raise _fail(key, "InvalidProperty", "maxIterations is a whole number from 1")
        longest = _duration(key, props["maxDuration"], "maxDuration") if props.get("maxDuration") is not None else None
        condition = task.properties.get("condition", "")
        started = now_ms()
        children = task.children.get("tasks", ())
        for index in range(most):
            inner = scope.child(index=index)
            await self.runner.run_tasks(ex, children, inner, f"{key}[{index}].")
            scope.outputs.update({child.name: inner.outputs[child.name] for child in children if child.name in inner.outputs})
            if await self.runner.templates.condition(str(condition), inner.data, self.runner.lookup_for(ex)):
                return {"iterations": index + 1, "conditionMet": True}
            if longest is not None and now_ms() - started >= longest * 1000:
                break
            if interval:
                await asyncio.sleep(interval)
        return {"iterations": index + 1, "conditionMet": False}

    async def sleep(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        started = ex.step(f"sleep:{key}")
        if started is None:
            props = await self._props(ex, task, scope)
            seconds = _duration(key, props.get("duration"), "duration")
            started = {"until": now_ms() + int(seconds * 1000)}
            await self.runner.checkpoint(ex, f"sleep:{key}", started)
        if now_ms() < started["until"]:
            raise Suspend(until_ms=started["until"])
        return {"sleptUntil": started["until"]}

    async def fail(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        props = await self._props(ex, task, scope)
        raise _fail(key, "FlowFailed", str(props.get("message") or f"the flow was failed by task {task.name}"))

    async def subflow(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        started = ex.step(f"subflow:{key}")
        props = await self._props(ex, task, scope) if started is None else {}
        wait = bool(task.properties.get("wait", True))
        if started is None:
            inputs = props.get("inputs") or {}
            if not isinstance(inputs, dict):
                raise _fail(key, "InvalidProperty", "inputs is an object")
            try:
                child = await self.start_subflow(ex, str(props.get("namespace", "")), str(props.get("name", "")),
                                                 inputs, wait)
            except Exception as error:  # the flow is missing, its inputs do not fit it...
                raise _fail(key, "SubflowError", getattr(error, "message", str(error))) from None
            started = {"executionId": child}
            await self.runner.checkpoint(ex, f"subflow:{key}", started)
            if not wait:
                return {"executionId": child, "status": "QUEUED", "outputs": None}
        if not wait:
            return {"executionId": started["executionId"], "status": "QUEUED", "outputs": None}
        state = await self.subflow_state(started["executionId"])
        if state is None or state["status"] not in ("SUCCESS", "FAILED", "CANCELLED", "TIMED_OUT"):
            raise Suspend(children=True)
        outputs = {"executionId": started["executionId"], "status": state["status"], "outputs": state.get("result")}
        if state["status"] != "SUCCESS":
            message = (state.get("error") or {}).get("message", "")
            raise _fail(key, "SubflowFailed", f"subflow execution {started['executionId']} ended {state['status']}: {message}")
        return outputs

    async def approval(self, ex: Execution, task: Task, scope: Scope, key: str) -> Any:
        opened = ex.step(f"approval:{key}")
        if opened is None:
            props = await self._props(ex, task, scope)
            timeout = props.get("timeout")
            expires = now_ms() + int(_duration(key, timeout, "timeout") * 1000) if timeout is not None else None
            approval_id = await self.open_approval(ex, key, props, expires)
            opened = {"id": approval_id, "expiresAt": expires, "default": props.get("default", "reject")}
            await self.runner.checkpoint(ex, f"approval:{key}", opened)
            ex.log(task.name, f"waiting for approval {approval_id}")
        state = await self.approval_state(opened["id"])
        decision = state["status"] if state is not None else "PENDING"
        if decision == "PENDING":
            if opened.get("expiresAt") is None or now_ms() < opened["expiresAt"]:
                ex.awaiting.append(opened["id"])
                raise Suspend(until_ms=opened.get("expiresAt"), approval=True)
            approved = str(opened.get("default", "reject")).lower() in ("approve", "approved", "true")
            await self.close_approval(opened["id"], "APPROVED" if approved else "TIMED_OUT")
            state = {"status": "TIMED_OUT", "values": {}, "decided_by": None}
            if not approved:
                raise _fail(key, "ApprovalTimedOut", f"approval {opened['id']} was not decided in time")
            return {"approved": True, "decidedBy": None, "values": {}, "timedOut": True}
        if decision == "REJECTED":
            raise _fail(key, "Rejected", f"approval {opened['id']} was rejected by {state.get('decided_by')}")
        return {"approved": True, "decidedBy": state.get("decided_by"), "values": state.get("values") or {}}


def _prefix(key: str, task: Task) -> str:
    """Children keep the prefix of their parent's key (a loop iteration, `errors/`): `each[2].save`."""
    return key[: len(key) - len(task.name)]
