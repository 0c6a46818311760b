"""`script.*`: user code in a flow — Python (inline or a saved script) and shell commands.

Both run in a child process of the fork server through `TaskContext.run_python`, walled off
like any user code (DESIGN §8): the server itself never runs user code, nor a shell. A shell
command is handed to a small fixed Python program (`SHELL_PROGRAM`) as an argument — never
pasted into code — which runs it with `/bin/sh -c` in a session of its own, so a timeout kills
the command and everything it started.
"""

from __future__ import annotations

from typing import Any

from app.plugins.durations import duration_schema, seconds
from app.plugins.registry import Manifest, Plugin, TaskContext, TaskFailed
from app.plugins.schema import anything, obj, string_map, text

GRACE_S = 10.0  # the child's own deadline, past the command's: the program reports the timeout itself
TAIL = 500  # characters of stderr quoted in a failure's message

SHELL_PROGRAM = '''
import os
import signal
import subprocess


def main(command: str, env: dict, timeout_s: float | None = None):
    process = subprocess.Popen(
        ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **env}, start_new_session=True, encoding="utf-8", errors="replace",
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the shell and all it started
        stdout, stderr = process.communicate()
        return {"exitCode": None, "stdout": stdout, "stderr": stderr, "timedOut": True}
    return {"exitCode": process.returncode, "stdout": stdout, "stderr": stderr, "timedOut": False}
'''


async def python(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run inline code (a script with `def main(...)`) or a saved script by path; main's result."""
    timeout = properties.get("timeout")
    result = await ctx.run_python(
        code=properties.get("code"), path=properties.get("path"), args=properties["args"],
        timeout_s=seconds(timeout, "timeout") if timeout is not None else None,
    )
    return {"result": result}


async def shell(properties: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run a command with `/bin/sh -c` in a walled-off child; a non-zero exit code fails the
    task unless `allowFailedExit`."""
    timeout = properties.get("timeout")
    timeout_s = seconds(timeout, "timeout") if timeout is not None else None
    done = await ctx.run_python(
        code=SHELL_PROGRAM, path=None,
        args={"command": properties["command"], "env": properties["env"], "timeout_s": timeout_s},
        timeout_s=timeout_s + GRACE_S if timeout_s is not None else None,
    )
    if not isinstance(done, dict):
        raise TaskFailed("ShellFailed", "the command's runner answered nothing")
    outputs = {"exitCode": done.get("exitCode"), "stdout": done.get("stdout", ""), "stderr": done.get("stderr", "")}
    if done.get("timedOut"):
        raise TaskFailed("Timeout", f"the command did not finish within {timeout_s:g} s{_tail(outputs['stderr'])}")
    if outputs["exitCode"] != 0 and not properties["allowFailedExit"]:
        raise TaskFailed("ShellFailed", f"the command exited with {outputs['exitCode']}{_tail(outputs['stderr'])}")
    return outputs


def _tail(stderr: str) -> str:
    stderr = stderr.strip()
    if not stderr:
        return ""
    return f": {stderr if len(stderr) <= TAIL else '…' + stderr[-TAIL:]}"


_TIMEOUT = duration_schema("how long the code may run (the task's own timeout applies too)")

PLUGINS = [
    Plugin(Manifest(
        id="script.python", name="Python", category="script",
        description="Run Python in a child process of the fork server, walled off: inline `code` (a script with "
                    "`def main(...)`) or a saved script's `path`, called with `args`; main's return value is `result`.",
        input_schema=obj(
            {"code": text("a Python script with def main(...)", minLength=1),
             "path": text("a saved script's path, e.g. f/billing/charge", minLength=1),
             "args": {"type": "object", "default": {}, "description": "main's arguments by name"},
             "timeout": _TIMEOUT},
            oneOf=[{"required": ["code"]}, {"required": ["path"]}],
        ),
        output_schema=obj({"result": anything("what main returned")}, required=["result"]),
    ), python),
    Plugin(Manifest(
        id="script.shell", name="Shell command", category="script",
        description="Run a command with /bin/sh -c in a walled-off child process; its exit code, stdout and stderr. "
                    "A non-zero exit code fails the task unless allowFailedExit is true.",
        input_schema=obj(
            {"command": text("the command line", minLength=1),
             "env": {**string_map("environment variables to add"), "default": {}},
             "timeout": duration_schema("how long the command may run; then it and all it started are killed"),
             "allowFailedExit": {"type": "boolean", "default": False,
                                 "description": "a non-zero exit code is an output, not a failure"}},
            required=["command"],
        ),
        output_schema=obj({"exitCode": {"type": "integer"}, "stdout": {"type": "string"}, "stderr": {"type": "string"}},
                          required=["exitCode", "stdout", "stderr"]),
    ), shell),
]
