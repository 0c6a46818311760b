"""The fork server with real processes: runs, logs, limits, crashes, kills, restarts.

Every run has a timeout (30 s unless the test is about timeouts), so no test can hang.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.engine import forkserver as forkserver_module
from app.engine.forkserver import ChildJob, ChildOutcome, ForkServer, ForkServerError
from app.runtimes.python.preload import is_light
from app.runtimes.python.protocol import run_frame
from app.runtimes.python.runner import compile_script

Lines = list[tuple[float, str, str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    instance = ForkServer(tmp_path_factory.mktemp("fork") / "run")
    instance.start(wait=True)
    yield instance
    instance.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ForkServer]:
    """A fork server of its own, for tests that kill or stop it."""
    instance = ForkServer(tmp_path / "run")
    instance.start(wait=True)
    yield instance
    instance.stop()


def run(server: ForkServer, source: str, args: dict[str, Any] | None = None, cancel: threading.Event | None = None,
        **settings: Any) -> tuple[ChildOutcome, Lines]:
    lines: Lines = []
    settings.setdefault("timeout_s", 30)
    job = ChildJob(source=textwrap.dedent(source), path="f/test/script", args=args or {}, env=settings.pop("env", {}),
                   **settings)
    outcome = server.run(job, lambda ts, stream, line: lines.append((ts, stream, line)), cancel or threading.Event())
    return outcome, lines


def texts(lines: Lines) -> list[str]:
    return [line for _, _, line in lines]


def processes_mentioning(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- runs ---------------------------------------------------------------------------------------


def test_a_trivial_run_returns_its_argument(server: ForkServer) -> None:
    outcome, _ = run(server, "def main(x): return x", {"x": {"a": [1, 2.5, None, "é"]}})
    assert outcome.status == "success", outcome
    assert json.loads(outcome.result or "") == {"a": [1, 2.5, None, "é"]}


def test_runs_in_a_row_take_milliseconds(server: ForkServer) -> None:
    run(server, "def main(x): return x", {"x": 0})  # warm
    durations = []
    for i in range(20):
        started = time.perf_counter()
        outcome, _ = run(server, "def main(x): return x", {"x": i})
        durations.append((time.perf_counter() - started) * 1000)
        assert outcome.status == "success" and outcome.result == str(i)
    p50 = statistics.median(durations)
    print(f"\ntrivial run through ForkServer.run: p50 {p50:.2f} ms, max {max(durations):.2f} ms")
    assert p50 < 50  # a few ms on an idle machine; the bound allows a loaded one


def test_the_fork_server_starts_quickly(tmp_path: Path) -> None:
    instance = ForkServer(tmp_path / "run")
    started = time.perf_counter()
    instance.start(wait=True)
    ready_ms = (time.perf_counter() - started) * 1000
    try:
        outcome, _ = run(instance, "def main(): return 1")
        print(f"\nfork server ready in {ready_ms:.0f} ms")
        assert outcome.status == "success"
        assert ready_ms < 5000
    finally:
        instance.stop()


def test_runs_from_four_threads_at_once(server: ForkServer) -> None:
    results: dict[int, list[str | None]] = {}

    def work(thread: int) -> None:
        results[thread] = []
        for i in range(5):
            outcome, _ = run(server, "import time\ndef main(x):\n    time.sleep(0.01)\n    return x", {"x": thread * 100 + i})
            results[thread].append(outcome.result)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {t: [str(t * 100 + i) for i in range(5)] for t in range(4)}


def test_runs_on_the_event_loop_share_one_connection(own_server: ForkServer) -> None:
    async def main() -> None:
        lines: dict[int, list[str]] = {i: [] for i in range(12)}
        source = "import time\ndef main(x):\n    print('x is', x)\n    time.sleep(0.05)\n    return x * 2\n"
        handles = [
            await own_server.submit(ChildJob(source=source, path="f/test/many", args={"x": i}, env={}, timeout_s=30),
                                    lambda ts, stream, line, i=i: lines[i].append(line))
            for i in range(12)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*(h.outcome for h in handles)), 30)
        assert [o.result for o in outcomes] == [str(2 * i) for i in range(12)]
        assert lines == {i: [f"x is {i}"] for i in range(12)}  # each run's lines, and only its own
        endless = await own_server.submit(
            ChildJob(source="import time\ndef main():\n    time.sleep(60)\n", path="f/test/endless", args={}, env={},
                     timeout_s=30), lambda *line: None)
        await asyncio.sleep(0.3)
        endless.cancel()
        outcome = await asyncio.wait_for(endless.outcome, 5)
        assert outcome.status == "cancelled" and outcome.exit_reason == "killed: the run was cancelled"

    asyncio.run(main())


def test_a_client_that_goes_away_takes_its_runs_with_it(server: ForkServer) -> None:
    job = ChildJob(source=textwrap.dedent("""
        import subprocess, time
        def main():
            subprocess.Popen(["sleep", "877"])
            time.sleep(60)
    """), path="f/test/orphan", args={}, env={}, timeout_s=60)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(server.socket_path))
    conn.sendall(run_frame(1, job))
    assert wait_until(lambda: processes_mentioning("sleep 877"), 5)
    conn.close()
    assert wait_until(lambda: not processes_mentioning("sleep 877"), 3)
    assert run(server, "def main(): return 'still serving'")[0].result == '"still serving"'


def test_stdout_stderr_and_a_subprocess_are_log_lines_in_order(server: ForkServer) -> None:
    outcome, lines = run(server, """
        import os, sys
        def main():
            print("one")
            print("two", file=sys.stderr)
            os.system("echo from-shell")
            sys.stdout.write("no newline at the end")
            return "done"
    """)
    assert outcome.status == "success"
    assert texts(lines) == ["one", "two", "from-shell", "no newline at the end"]
    assert all(abs(ts - time.time()) < 60 for ts, _, _ in lines)


def test_logs_stream_while_the_run_is_in_flight(server: ForkServer) -> None:
    seen: list[tuple[float, str]] = []
    job = ChildJob(source="import time\ndef main():\n    print('early', flush=True)\n    time.sleep(1)\n",
                   path="f/test/slow", args={}, env={}, timeout_s=30)
    started = time.monotonic()
    outcome = server.run(job, lambda ts, stream, line: seen.append((time.monotonic() - started, line)), threading.Event())
    assert outcome.status == "success"
    assert seen[0][1] == "early" and seen[0][0] < 0.8  # delivered before the run ended


def test_an_exception_is_the_error_with_a_traceback_into_the_script(server: ForkServer) -> None:
    outcome, _ = run(server, """
        def helper(d):
            return d["missing"]

        def main():
            return helper({})
    """)
    assert outcome.status == "error"
    assert outcome.error is not None
    assert outcome.error["name"] == "KeyError" and outcome.error["message"] == "'missing'"
    trace = outcome.error["traceback"]
    assert 'File "f/test/script.py", line 6, in main' in trace
    assert 'File "f/test/script.py", line 3, in helper' in trace
    assert 'return d["missing"]' in trace  # the source line, from linecache
    assert "app/runtimes/python/" not in trace  # the runner's own frames are left out


def test_a_syntax_error_is_an_error(server: ForkServer) -> None:
    outcome, _ = run(server, "def main(:\n    pass\n")
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error["name"] == "SyntaxError"
    assert "f/test/script.py" in outcome.error["traceback"]


def test_main_blocks_do_not_run_and_the_entrypoint_is_required(server: ForkServer) -> None:
    outcome, lines = run(server, """
        def main():
            return __name__
        if __name__ == "__main__":
            print("should not run")
    """)
    assert outcome.status == "success" and json.loads(outcome.result or "") == "__flowmill_script__"
    assert lines == []
    outcome, _ = run(server, "x = 1\n")
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error["message"] == "the script defines no function main()"


def test_a_process_forked_by_the_script_does_not_answer_for_the_run(server: ForkServer) -> None:
    outcome, _ = run(server, """
        import os, time
        def main():
            if os.fork() == 0:
                return "from the forked process"
            time.sleep(0.2)
            return "from the run"
    """)
    assert outcome.status == "success" and json.loads(outcome.result or "") == "from the run"


def test_a_malformed_job_is_an_error_not_a_crash(server: ForkServer) -> None:
    outcome, _ = run(server, "def main(): return 1", env={"BROKEN": None})
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error["name"] == "InvalidJob" and "Expected `str`, got `null`" in outcome.error["message"]


def test_sys_exit_is_an_error_not_a_crash(server: ForkServer) -> None:
    outcome, _ = run(server, "import sys\ndef main():\n    sys.exit(3)\n")
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error["message"] == "the script called sys.exit(3)"


def test_async_main_and_the_preprocessor(server: ForkServer) -> None:
    outcome, _ = run(server, """
        import asyncio
        async def main(a, b=2):
            await asyncio.sleep(0.01)
            return a + b
    """, {"a": 40})
    assert outcome.status == "success" and outcome.result == "42"

    source = """
        def preprocessor(event):
            return {"name": event["body"]["who"].upper()}
        def main(name):
            return f"hello {name}"
    """
    outcome, _ = run(server, source, preprocessor_event={"kind": "webhook", "body": {"who": "ada"}})
    assert outcome.status == "success" and json.loads(outcome.result or "") == "hello ADA"
    outcome, _ = run(server, source, {"name": "bob"})  # no event: main is called with the args
    assert json.loads(outcome.result or "") == "hello bob"


def test_arguments_declared_bytes_and_datetime_are_given_as_such(server: ForkServer) -> None:
    outcome, _ = run(server, """
        import datetime
        def main(data: bytes, when: datetime.datetime):
            return [len(data), when.year, when.tzinfo is not None]
    """, {"data": "aGVsbG8=", "when": "2024-05-01T10:00:00Z"})
    assert json.loads(outcome.result or "") == [5, 2024, True]


def test_results_bytes_datetime_sets_and_tuples_become_json(server: ForkServer) -> None:
    outcome, _ = run(server, """
        import datetime
        def main():
            return {"b": b"hello", "when": datetime.datetime(2024, 5, 1, 10, 30), "s": {3}, "t": (1, 2)}
    """)
    assert outcome.status == "success", outcome
    result = json.loads(outcome.result or "")
    assert result["b"] == "aGVsbG8="
    assert datetime.datetime.fromisoformat(result["when"]) == datetime.datetime(2024, 5, 1, 10, 30)
    assert result["s"] == [3] and result["t"] == [1, 2]


def test_an_unserializable_result_is_an_error(server: ForkServer) -> None:
    outcome, _ = run(server, "def main():\n    return object()\n")
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error["message"].startswith("the result is not JSON-serializable: ")


def test_a_result_over_the_limit_is_refused_not_truncated(server: ForkServer) -> None:
    outcome, _ = run(server, "def main():\n    return 'x' * 5000\n", max_result_bytes=1000)
    assert outcome.status == "error" and outcome.result is None and outcome.error is not None
    assert outcome.error["message"] == "the result of 5002 bytes exceeds the limit of 1000 bytes"


# -- the environment ----------------------------------------------------------------------------


def test_the_servers_environment_does_not_reach_the_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWMILL_MASTER_KEY", "secret-master-key")
    monkeypatch.setenv("SOME_SERVER_SETTING", "server-only")
    instance = ForkServer(tmp_path / "run")
    try:
        outcome, lines = run(instance, """
            import os
            def main():
                os.system("echo shell sees key=$FLOWMILL_MASTER_KEY job=$JOB_VAR")
                return {k: os.environ.get(k) for k in ("FLOWMILL_MASTER_KEY", "SOME_SERVER_SETTING", "JOB_VAR", "PATH")}
        """, env={"JOB_VAR": "from-the-job"})
    finally:
        instance.stop()
    result = json.loads(outcome.result or "")
    assert result["FLOWMILL_MASTER_KEY"] is None and result["SOME_SERVER_SETTING"] is None
    assert result["JOB_VAR"] == "from-the-job" and result["PATH"]
    assert texts(lines) == ["shell sees key= job=from-the-job"]


def test_sys_path_entries_come_first(server: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "flowmill_test_helper.py").write_text("VALUE = 'from the sys_path entry'\n")
    outcome, _ = run(server, """
        import sys, flowmill_test_helper
        def main():
            return [sys.path[0], flowmill_test_helper.VALUE]
    """, sys_path=[str(tmp_path)])
    assert json.loads(outcome.result or "") == [str(tmp_path), "from the sys_path entry"]


def test_wmill_is_preloaded(server: ForkServer) -> None:
    outcome, _ = run(server, "import sys\ndef main():\n    return ['wmill' in sys.modules, 'httpx' in sys.modules]\n")
    assert json.loads(outcome.result or "") == [True, True]


# -- timeouts and cancels -----------------------------------------------------------------------


def test_a_lean_fork_server_imports_only_the_light_modules(tmp_path: Path) -> None:
    instance = ForkServer(tmp_path / "run", lean=True)
    instance.start(wait=True)
    try:
        outcome, _ = run(instance, """
            import json, sys
            def main():
                return sorted(name for name in ("asyncio", "httpx", "wmill", "ssl", "json") if name in sys.modules)
        """)
        assert outcome.status == "success" and json.loads(outcome.result) == ["json"]
    finally:
        instance.stop()


def test_code_compiled_by_the_server_runs_like_the_source(server: ForkServer) -> None:
    source = "def main(x: int):\n    return {'annotation': main.__annotations__['x'], 'half': 1 / x}\n"
    code = compile_script(source, "f/test/script")
    assert code is not None and compile_script("def main(:\n", "f/test/script") is None
    for compiled in (code, None):  # the server's code, and the child compiling the source itself
        outcome, _ = run(server, source, {"x": 2}, code=compiled)
        assert outcome.status == "success"
        # Annotations stay text (as with `from __future__ import annotations`) either way.
        assert json.loads(outcome.result) == {"annotation": "int", "half": 0.5}
        outcome, _ = run(server, source, {"x": 0}, code=compiled)
        assert outcome.status == "error" and outcome.error["name"] == "ZeroDivisionError"
        trace = outcome.error["traceback"]
        assert 'File "f/test/script.py", line 2, in main' in trace and "1 / x" in trace  # the line's text too


def test_each_child_draws_its_own_random_numbers(server: ForkServer) -> None:
    # random reseeds itself on fork; two children forked from one parent must not repeat each other.
    draws = {run(server, "import random\ndef main():\n    return random.random()\n")[0].result for _ in range(3)}
    assert len(draws) == 3


@pytest.mark.parametrize(("source", "light"), [
    ("import json, re\nfrom datetime import datetime\ndef main(x: int = 1):\n    return x\n", True),
    ("def main(**args):\n    return args\n", True),
    ("import random\ndef main():\n    return random.random()\n", False),  # it reseeds on each fork
    ("import wmill\ndef main():\n    pass\n", False),
    ("def main():\n    import httpx\n", False),  # an import inside main counts too
    ("import os.path\nimport numpy as np\ndef main():\n    pass\n", False),
    ("async def main():\n    return 1\n", False),  # needs asyncio
    ("from . import helper\ndef main():\n    pass\n", False),
    ("def main(:\n", False),
])
def test_which_scripts_the_lean_fork_server_runs(source: str, light: bool) -> None:
    assert is_light(source) is light


def test_a_timeout_kills_the_run(server: ForkServer) -> None:
    started = time.monotonic()
    outcome, _ = run(server, "import time\ndef main():\n    time.sleep(60)\n", timeout_s=2)
    elapsed = time.monotonic() - started
    assert outcome.status == "timeout"
    assert 1.9 < elapsed < 4
    assert "timeout of 2 s" in outcome.exit_reason


def test_a_timeout_kills_a_run_that_prints_all_the_time(server: ForkServer) -> None:
    started = time.monotonic()
    outcome, lines = run(server, "def main():\n    while True:\n        print('again', flush=True)\n", timeout_s=1)
    assert outcome.status == "timeout"
    assert time.monotonic() - started < 3
    assert texts(lines)[-1].startswith("[flowmill] log truncated after 20000 lines")


def test_a_cancel_kills_the_run_and_what_it_started(server: ForkServer) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    outcome, _ = run(server, """
        import subprocess, time
        def main():
            subprocess.Popen(["sleep", "987"])
            time.sleep(60)
    """, cancel=cancel)
    assert outcome.status == "cancelled"
    assert time.monotonic() - started < 2
    assert wait_until(lambda: not processes_mentioning("sleep 987"), 2)


# -- crashes ------------------------------------------------------------------------------------


def test_os_abort_is_a_crash_and_the_next_run_works(server: ForkServer) -> None:
    outcome, lines = run(server, "import os\ndef main():\n    print('about to abort')\n    os.abort()\n")
    assert outcome.status == "crashed"
    assert outcome.exit_reason == "killed by signal SIGABRT"
    assert texts(lines)[0] == "about to abort"  # what it wrote before dying is kept
    assert any("Fatal Python error: Aborted" in line for line in texts(lines))
    assert run(server, "def main(): return 'fine'")[0].status == "success"


def test_a_segfault_and_os_exit_are_crashes(server: ForkServer) -> None:
    outcome, _ = run(server, "import ctypes\ndef main():\n    ctypes.string_at(0)\n")
    assert outcome.status == "crashed" and outcome.exit_reason == "killed by signal SIGSEGV"
    outcome, _ = run(server, "import os\ndef main():\n    os._exit(1)\n")
    assert outcome.status == "crashed" and outcome.exit_reason == "exited with code 1"


@pytest.mark.parametrize("blow_up", [
    "x = bytearray(10**10)",
    "x = []\n    while True:\n        x.append(bytearray(10**6))",
])
def test_a_memory_blow_up_fails_the_run_and_nothing_else(server: ForkServer, blow_up: str) -> None:
    started = time.monotonic()
    outcome, _ = run(server, f"def main():\n    {blow_up}\n", memory_limit_mb=256)
    assert outcome.status in ("error", "crashed"), outcome
    if outcome.status == "error":
        assert outcome.error is not None and outcome.error["name"] == "MemoryError"
    assert time.monotonic() - started < 20
    assert run(server, "def main(): return len(bytearray(10**7))", memory_limit_mb=256)[0].result == str(10**7)


# -- logs ---------------------------------------------------------------------------------------


def test_100000_lines_are_cut_at_the_limit_with_a_marker(server: ForkServer) -> None:
    started = time.monotonic()
    outcome, lines = run(server, "def main():\n    for i in range(100_000):\n        print(f'line {i}')\n")
    elapsed = time.monotonic() - started
    print(f"\n100,000 lines printed and cut to 20,000 in {elapsed:.2f} s")
    assert outcome.status == "success"
    assert len(lines) == 20_001
    assert texts(lines)[:2] == ["line 0", "line 1"] and texts(lines)[19_999] == "line 19999"
    assert lines[-1][1] == "flowmill"
    assert lines[-1][2].startswith("[flowmill] log truncated after 20000 lines; 80000 more lines were dropped")
    assert elapsed < 20


def test_the_byte_limit_and_long_lines(server: ForkServer) -> None:
    outcome, lines = run(server, """
        import sys
        def main():
            sys.stdout.write("a" * 100_000 + "\\n")
            print("after the long line")
            for i in range(100):
                print("b" * 1000)
    """, max_log_bytes=50_000)
    assert outcome.status == "success"
    first = texts(lines)[0]
    assert first.startswith("a" * 16384) and first.endswith("[flowmill] line cut at 16384 bytes")
    assert texts(lines)[1] == "after the long line"
    assert texts(lines)[-1].startswith("[flowmill] log truncated after 35 lines; 67 more lines were dropped")


# -- the fork server's life ---------------------------------------------------------------------


def test_a_killed_fork_server_is_restarted_by_the_next_run(own_server: ForkServer) -> None:
    assert run(own_server, "def main(): return 1")[0].status == "success"
    old = own_server.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not processes_mentioning(str(own_server.socket_path)), 3)  # its children died with it
    outcome, _ = run(own_server, "def main(): return 2")
    assert outcome.status == "success" and outcome.result == "2"
    assert own_server.pid != old


def test_stop_leaves_no_process_behind(own_server: ForkServer) -> None:
    marker = str(own_server.socket_path)
    outcome: list[ChildOutcome] = []
    running = threading.Thread(target=lambda: outcome.append(run(own_server, """
        import subprocess, time
        def main():
            subprocess.Popen(["sleep", "876"])
            time.sleep(60)
    """)[0]))
    running.start()
    assert wait_until(lambda: processes_mentioning("sleep 876"), 5)
    assert processes_mentioning(marker)  # the fork server and its children
    own_server.stop()
    running.join(10)
    assert outcome and outcome[0].status == "crashed"
    assert wait_until(lambda: not processes_mentioning(marker) and not processes_mentioning("sleep 876"), 3), \
        processes_mentioning(marker)
    with pytest.raises(ForkServerError, match="stopped"):  # a late run does not bring it back
        run(own_server, "def main(): return 1")


def test_the_fork_server_exits_when_flowmill_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from app.engine.forkserver import ForkServer
        server = ForkServer(Path({str(tmp_path / "run")!r}))
        server.start(wait=True)
        print(server.pid, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert parent.stdout is not None
        fork_server_pid = int(parent.stdout.readline())
        marker = str(tmp_path / "run" / "fork.sock")
        assert processes_mentioning(marker)
        parent.kill()
        parent.wait(5)
        assert wait_until(lambda: not processes_mentioning(marker), 3), f"fork server {fork_server_pid} outlived its parent"
    finally:
        parent.kill()


def test_the_frozen_program_starts_itself_as_the_fork_server(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("/run/x/fork.sock")
    assert forkserver_module.command(path, 2, 5)[:5] == [sys.executable, "-P", "-m", "app", "_forkserver"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert forkserver_module.command(path, 2, 5)[:8] == [
        sys.executable, "_forkserver", "--socket", str(path), "--idle", "2", "--ready-fd", "5"]
