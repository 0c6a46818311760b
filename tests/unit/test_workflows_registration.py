"""Registering workflows, pausing runs, and the replay rules of Flowmill's SDK, without a server:
a script whose `main` is `@workflow` is registered under its name; the pause statements take a
run from each status where they make sense; retry backoffs; non-determinism and size errors."""

from __future__ import annotations

import json

import pytest

from app.engine import queue
from app.engine.executor import now_ms
from app.engine.queue import NewRun
from app.errors import Conflict, NotFound
from app.runtimes.python import steps, tasks
from app.runtimes.python.schema import inspect_script
from app.services.actor import Actor
from app.services.scripts import Scripts
from tests.unit.test_store import run_on

ADMIN = Actor("admin", "main", "admin")


@pytest.mark.parametrize("source, name", [
    ("from flowmill import workflow\n@workflow\ndef main(): pass", None),
    ("import flowmill\n@flowmill.workflow(name='orders.fulfil')\ndef main(): pass", "orders.fulfil"),
    ("import wmill\n@wmill.workflow\nasync def main(): pass", None),
    ("from wmill import workflow\n@workflow\nasync def main(x: int): return x", None),
])
def test_a_main_decorated_workflow_is_found_with_its_name(source: str, name: str | None) -> None:
    info = inspect_script(source)
    assert info.is_workflow and info.workflow_name == name


def test_a_plain_main_or_another_decorator_is_no_workflow() -> None:
    assert not inspect_script("def main(): pass").is_workflow
    assert not inspect_script("import functools\n@functools.cache\ndef main(): pass").is_workflow
    assert not inspect_script("import other\n@other.workflow\ndef main(): pass").is_workflow


def test_scripts_register_workflows_by_name(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        scripts = Scripts(db)
        plain, _ = await scripts.save(ADMIN, "f/orders/plain", "def main(): pass")
        assert plain["workflow"] is None
        fulfil, _ = await scripts.save(ADMIN, "f/orders/fulfil", "import wmill\n@wmill.workflow\nasync def main(): pass")
        assert fulfil["workflow"] == "f.orders.fulfil"
        named, _ = await scripts.save(ADMIN, "f/orders/ship", "import flowmill\n@flowmill.workflow(name='ship')\ndef main(): pass")
        assert named["workflow"] == "ship"
        assert await scripts.workflows("main") == [("f.orders.fulfil", "f/orders/fulfil"), ("ship", "f/orders/ship")]
        assert (await scripts.by_workflow("main", "ship"))["path"] == "f/orders/ship"
        with pytest.raises(NotFound):
            await scripts.by_workflow("main", "f.orders.plain")
        with pytest.raises(Conflict):  # one name, one workflow
            await scripts.save(ADMIN, "f/other/ship", "import flowmill\n@flowmill.workflow(name='ship')\ndef main(): pass")
        # A new version that is no workflow any more unregisters it.
        await scripts.save(ADMIN, "f/orders/ship", "def main(): pass")
        assert await scripts.workflows("main") == [("f.orders.fulfil", "f/orders/fulfil")]

    run_on(backend, scenario)


def _run(job_id: str, status: str) -> NewRun:
    now = now_ms()
    return NewRun(id=job_id, workspace="main", kind="workflow", path="f/x/y", args="{}", status=status,
                  trigger_kind="api", trigger_detail="", created_by="admin", created_at=now, scheduled_for=now)


def test_pause_takes_idle_runs_at_once_and_asks_a_running_one(backend: str) -> None:
    async def scenario(db) -> None:  # type: ignore[no-untyped-def]
        statuses = {"q": "QUEUED", "r": "RUNNING", "w": "WAITING", "p": "PAUSED", "s": "SUCCESS"}
        await db.write(*(queue.insert(_run(job_id, "QUEUED")) for job_id in statuses))
        await db.write(*(queue.checkpoint("w", "sleep:1", "1", now_ms()),))
        for job_id, status in statuses.items():
            await db.execute("UPDATE job SET status = $1 WHERE id = $2", status, job_id)
        for job_id in statuses:
            asked, idle = await db.write(queue.request_pause(job_id), queue.pause_idle(job_id))
            assert asked.rowcount == (job_id in "qrw") and idle.rowcount == (job_id in "qw"), job_id
        rows = {row["id"]: (row["status"], row["pause_requested"]) for row in
                await db.fetch("SELECT id, status, pause_requested FROM job")}
        assert rows == {"q": ("PAUSED", 0), "r": ("RUNNING", 1), "w": ("PAUSED", 0), "p": ("PAUSED", 0),
                        "s": ("SUCCESS", 0)}
        # The running one learns it with its next checkpoint, in that checkpoint's transaction.
        stored, pause = await db.write(queue.checkpoint("r", "s1", "1", now_ms()), queue.pause_asked("r"))
        assert stored.rowcount == 1 and pause.rowcount == 1
        await db.write(queue.clear_pause("r"))
        assert (await db.write(queue.pause_asked("r")))[0].rowcount == 0
        # A record that changes keeps its place and takes the new value.
        await db.write(queue.checkpoint("r", "retry:s2", '{"attempt": 1}', now_ms(), replace=True))
        await db.write(queue.checkpoint("r", "retry:s2", '{"attempt": 2}', now_ms(), replace=True))
        assert json.loads(await db.fetchval("SELECT result FROM job_step WHERE job_id = 'r' AND name = 'retry:s2'")) == {
            "attempt": 2}

    run_on(backend, scenario)


def test_retry_backoffs() -> None:
    assert [steps.Retry(delay=2, backoff="constant").wait_s(n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [steps.Retry(delay=2, backoff="linear").wait_s(n) for n in (1, 2, 3)] == [2, 4, 6]
    assert [steps.Retry(delay=2, backoff="exponential").wait_s(n) for n in (1, 2, 3)] == [2, 4, 8]
    with pytest.raises(steps.StepError):
        steps.Retry(backoff="random")  # type: ignore[arg-type]
    assert steps.Retry(non_retryable=ValueError).non_retryable == (ValueError,)  # type: ignore[arg-type]


def _replay(stored: dict[str, object]) -> None:
    steps.begin(None, {name: json.dumps(value) for name, value in stored.items()})
    tasks.begin()


def test_a_replay_in_another_order_names_the_step() -> None:
    _replay({"a": 1, "sleep:1": 0, "b": 2})
    assert steps.step("a", lambda: 0) == 1
    with pytest.raises(steps.NonDeterminismError, match="'c'.*'b'"):
        steps.step("c", lambda: 3)
    _replay({"a": 1, "b": 2})
    with pytest.raises(steps.NonDeterminismError, match="step 'b' where the run's history has 'a'"):
        steps.step("b", lambda: 0)
    _replay({"a": 1})
    assert steps.step("a", lambda: 0) == 1 and steps.step("b", lambda: 2) == 2  # past the history: new steps


def test_steps_refuse_reserved_names_names_taken_twice_and_results_too_large() -> None:
    _replay({})
    with pytest.raises(steps.StepError, match="reserved"):
        steps.step("sleep:1", lambda: 0)
    steps.step("x", lambda: 0)
    with pytest.raises(steps.StepError, match="twice"):
        steps.step("x", lambda: 0)
    with pytest.raises(steps.StepError, match="'big' is 2097154 bytes"):
        steps.step("big", lambda: "x" * (2 * 1024 * 1024))


def test_a_retry_under_a_second_retries_in_place() -> None:
    _replay({})
    attempts = []

    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return len(attempts)

    assert steps.step("flaky", flaky, retry=steps.Retry(limit=2, delay=0.01)) == 3
    attempts.clear()
    with pytest.raises(ConnectionError):
        steps.step("never", flaky, retry=steps.Retry(limit=1, delay=0.01))
    assert len(attempts) == 2


def test_sleep_until_a_time_or_a_datetime() -> None:
    import datetime
    import time

    _replay({})
    steps.sleep_until(time.time() - 5)  # past: goes on
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)
    with pytest.raises(steps.Suspend) as suspended:
        steps.sleep_until(later)
    assert suspended.value.wait == {"untilMs": int(later.timestamp() * 1000)}
    _replay({"sleep:1": 0, "sleep:2": 1000})  # a later turn: the stored wake time rules, and it has passed
    steps.sleep_until(0)
    steps.sleep_until(later)
