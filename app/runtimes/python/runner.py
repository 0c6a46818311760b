"""What a forked child does: wait for its one run, wall itself off, become the script's process,
run the script (its preprocessor first, given an event, then `main`), answer how it ended, exit.

Most of a child's world is made once in the fork server, before it forks (the streams, the
environment it starts from, the compiled script when the server sends it): just after a fork,
every page a child touches is copied, so a child does as little as it can.
"""

from __future__ import annotations
import __future__

import _signal
import base64
import ctypes
import datetime
import faulthandler
import inspect
import linecache
import marshal
import os
import resource
import signal
import sys
import traceback
import types
import typing
from typing import Any, NoReturn

import msgspec

from app.runtimes import response
from app.runtimes.python.arguments import ArgumentError, Arguments
from app.runtimes.python import steps, tasks, wac
from app.runtimes.python.protocol import (
    MAX_ERROR_TEXT,
    ChildJob,
    Failed,
    Finished,
    Suspended,
    encode_frame,
    read_job,
    send,
)
from app.runtimes.python.wall import Wall

SCRIPT_MODULE = "__flowmill_script__"  # not "__main__": `if __name__ == "__main__"` blocks stay idle
# What a script's environment starts from; nothing else of the server's environment reaches it.
BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL",
                 "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
PR_SET_PDEATHSIG = 1
EXIT_RUNNER_FAILED = 70  # the runner itself failed (the job was unreadable, the server went away)


def open_standard_streams() -> None:
    """sys.stdout and sys.stderr as scripts get them, made once in the fork server (in each
    child it would cost ~80 copied pages): line-buffered, so that a line reaches the log when
    it is printed, on fds 1 and 2, which each child points at its output pipe."""
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    # A segfault or os.abort() leaves its Python traceback in the run's log.
    faulthandler.enable(sys.stderr)


def _capture_output(write_end: int) -> None:
    """Point fds 1 and 2 at the output pipe, so that print(), C-level writes and subprocesses
    are all captured, in the order they were written."""
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)


# A script is compiled as if it began with `from __future__ import annotations`: main's annotations
# stay text until something asks for them (the schema is inferred from the source without running it).
_COMPILE_FLAGS = __future__.annotations.compiler_flag


def script_filename(path: str) -> str:
    """The file name a script's code and tracebacks carry, e.g. f/demo/hello.py."""
    return path if path.endswith(".py") else f"{path}.py"


def compile_script(source: str, path: str) -> bytes | None:
    """`source` compiled the way a child would, as marshal data (None if it does not compile:
    the child then reports the error). Compiled once per script version by the server, it spares
    every child the compiler, whose work is in pages a child must copy before writing them."""
    try:
        code = compile(source, script_filename(path), "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return marshal.dumps(code)


def reset_environment() -> None:
    """Keep only the base environment. Done once in the fork server, not in each child: just
    after a fork every page touched is copied."""
    base = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    base.setdefault("PATH", os.defpath)
    os.environ.clear()  # also unsets them for the subprocesses the script starts
    os.environ.update(base)


def _enter(job: ChildJob, filename: str) -> None:
    """Make the process the script's: its environment, import path, argv and memory limit."""
    environ = os.environ
    for key, value in job.env.items():  # not update(): its check that env is a Mapping costs copied pages
        environ[key] = value
    sys.path[:0] = job.sys_path
    sys.argv = [filename]
    if job.memory_limit_mb:
        limit = job.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _error(name: str, message: str, trace: str = "") -> Failed:
    return Failed({"name": name, "message": message[:MAX_ERROR_TEXT], "traceback": trace[-MAX_ERROR_TEXT:]})


def _failure_of(error: BaseException, filename: str) -> Failed:
    """The error frame of an exception raised by the script, its traceback starting in the script."""
    # Free what the failing frames hold first: after a MemoryError, formatting needs memory.
    traceback.clear_frames(error.__traceback__)
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next  # the runner's frames (and asyncio's, for async main) are noise
    trace = "".join(traceback.format_exception(type(error), error, tb))
    if isinstance(error, SystemExit):
        code = "" if error.code is None else repr(error.code)
        return _error("SystemExit", f"the script called sys.exit({code})", trace)
    return _error(type(error).__name__, str(error), trace)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    result = function(*args, **kwargs)
    if isinstance(result, types.CoroutineType):
        import asyncio  # already loaded by httpx in the fork server: free

        return asyncio.run(result)
    return result


def _accepted(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments `function` takes: like Windmill, a payload's other keys (a webhook's,
    say) are left out rather than failing the run, unless it takes **kwargs."""
    code = getattr(function, "__code__", None)
    if code is not None and not isinstance(function, types.MethodType):  # a plain function: its code says
        if code.co_flags & inspect.CO_VARKEYWORDS:
            return args
        names = set(code.co_varnames[code.co_posonlyargcount: code.co_argcount + code.co_kwonlyargcount])
        return {name: value for name, value in args.items() if name in names}
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return args
    names = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {name: value for name, value in args.items() if name in names}


_COERCED = (bytes, datetime.datetime, datetime.date)


def _coerce(function: Any, args: dict[str, Any]) -> dict[str, Any]:
    """JSON carries bytes as base64 and datetimes as ISO text: give main what it declares."""
    declared = getattr(function, "__annotations__", None) or {}
    if not any(isinstance(a, str) or a in _COERCED for a in declared.values()):
        return args  # nothing to convert: skip typing.get_type_hints, which is slow
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable annotations: pass the arguments as they are
        return args
    coerced = dict(args)
    for name, value in args.items():
        wanted = hints.get(name)
        if not isinstance(value, str):
            continue
        if wanted is bytes:
            coerced[name] = base64.b64decode(value)
        elif wanted is datetime.datetime:
            coerced[name] = datetime.datetime.fromisoformat(value)  # 3.11 reads a trailing Z
        elif wanted is datetime.date:
            coerced[name] = datetime.date.fromisoformat(value)
    return coerced


def _to_json(value: Any) -> Any:
    """What msgspec does not encode by itself (it does bytes, datetimes, tuples, dataclasses)."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_result_encoder = msgspec.json.Encoder(enc_hook=_to_json)
_ENCODINGS = response.NAMES["content_transfer_encoding"]


def _mark_bytes(value: Any) -> Any:
    """A response object whose body is `bytes`: JSON carries them as base64 text, so say so
    (`flowmill_content_transfer_encoding: base64`) and its route answers the bytes themselves."""
    if (type(value) is dict and isinstance(value.get(response.BODY), (bytes, bytearray))
            and not any(name in value for name in _ENCODINGS) and not response.ALL_NAMES.isdisjoint(value)):
        return {**value, _ENCODINGS[0]: response.BASE64}
    return value


def _encode_result(value: Any, limit: int) -> Finished | Failed:
    try:
        data = _result_encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as error:
        return _error("ResultError", f"the result is not JSON-serializable: {error}")
    except MemoryError:
        return _error("MemoryError", "encoding the result as JSON exceeded the run's memory limit")
    if len(data) > limit:
        return _error("ResultTooLarge", f"the result of {len(data)} bytes exceeds the limit of {limit} bytes")
    return Finished(msgspec.Raw(data))


def _reported(kwargs: dict[str, Any], limit: int) -> msgspec.Raw:
    """main's arguments as the server keeps them, when a preprocessor made them; null when
    they have no JSON form or are too large to keep."""
    try:
        data = _result_encoder.encode(kwargs)
    except (TypeError, ValueError, OverflowError, MemoryError):
        return msgspec.Raw(b"null")
    return msgspec.Raw(data) if len(data) <= limit else msgspec.Raw(b"null")


MAX_REPORTED_ARGS = 5 * 1024 * 1024  # as the server bounds a run's arguments


def _execute(job: ChildJob, filename: str) -> Finished | Failed | Suspended:
    """Run the script's entry point (after its preprocessor, given an event): the outcome,
    with the arguments main got when the preprocessor made them."""
    made: list[dict[str, Any]] = []  # main's arguments, once the preprocessor made them
    outcome = _run_entry(job, filename, made)
    if made and not isinstance(outcome, Suspended):
        outcome.args = _reported(made[-1], MAX_REPORTED_ARGS)
    return outcome


def _run_entry(job: ChildJob, filename: str, made: list[dict[str, Any]]) -> Finished | Failed | Suspended:
    linecache.cache[filename] = (len(job.source), None, job.source.splitlines(True), filename)
    module = types.ModuleType(SCRIPT_MODULE)
    module.__file__ = filename
    sys.modules[SCRIPT_MODULE] = module  # dataclasses, typing and pickle look the module up
    try:
        if job.code is not None:  # the server compiled it with the same Python (the same executable)
            code = marshal.loads(job.code)
        else:
            code = compile(job.source, filename, "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - running it is the point
        if job.task_function is not None:  # one task of a Flowmill workflow: its body, given its arguments
            body = tasks.body_of(module.__dict__, job.task_function)
            return _encode_result(_call(body, **_coerce(body, job.args)), job.max_result_bytes)
        entry = module.__dict__.get(job.entrypoint)
        if not callable(entry):
            return _error("EntrypointMissing", f"the script defines no function {job.entrypoint}()")
        kwargs = job.args
        preprocessor = module.__dict__.get("preprocessor")
        if job.preprocessor_event is not None and callable(preprocessor):
            kwargs = _call(preprocessor, job.preprocessor_event)
            if not isinstance(kwargs, dict):
                return _error("PreprocessorError",
                              f"preprocessor(event) must return a dict of main's arguments, not {type(kwargs).__name__}")
            made.append(kwargs)
            if job.main_schema is not None:
                try:
                    kwargs = Arguments(job.main_schema, job.main_takes_kwargs).check(kwargs, added=("raw_string",))
                except ArgumentError as error:
                    return _error("InvalidArguments", f"the arguments preprocessor(event) returned do not fit main: "
                                                      f"{error.message}")
                made.append(kwargs)
        kwargs = _coerce(entry, _accepted(entry, kwargs))
        result = wac.run(entry, job, kwargs) if wac.is_workflow(entry) else _call(entry, **kwargs)
    except steps.Suspend as suspended:  # the turn is over: the run waits
        return Suspended(suspended.wait)
    except BaseException as error:  # noqa: BLE001 - whatever the script raises, SystemExit included, is its outcome
        if isinstance(error, MemoryError):
            module.__dict__.clear()  # what the script keeps globally: formatting the error needs memory
        return _failure_of(error, filename)
    return _encode_result(_mark_bytes(result), job.max_result_bytes)


def _flush_output(libc: ctypes.CDLL) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # the script closed or replaced it
            pass
    libc.fflush(None)  # what C code printed through stdio, which _exit would drop


def run_one(fd: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> bool:
    """Take one job from `fd`, run it walled off, and answer. False when the script's
    processes were left for the caller to kill (see `Wall.end_run`)."""
    try:
        job = read_job(fd)
    except msgspec.ValidationError as error:  # a fault of the server's, said as such rather than as a crash
        send(fd, encode_frame(_error("InvalidJob", f"the run's job is malformed: {error}")))
        return True
    if ruleset >= 0:
        try:
            wall.restrict(ruleset, job.sys_path)
        except OSError as error:  # never run a script outside its wall
            send(fd, encode_frame(_error("SandboxError", f"the run could not be walled off: {error}")))
            return True
    me = os.getpid()
    filename = script_filename(job.path)
    _enter(job, filename)
    steps.begin(fd, job.steps, in_task=job.task_function is not None)
    tasks.begin()
    outcome = _execute(job, filename)
    if os.getpid() != me:  # a process the script forked, returning from main: its outcome is not the run's
        os._exit(0)
    _flush_output(libc)
    try:
        frame = encode_frame(outcome)
    except MemoryError:  # under the memory limit, a large traceback may not fit
        frame = encode_frame(_error("MemoryError", "the run's outcome did not fit in its memory limit"))
    ended = wall.end_run()  # nothing the script started outlives its run, and is gone before the answer
    # Everything the script wrote is in the pipe before the outcome is sent: the fork server,
    # once it has the outcome, reads the pipe to its end and misses nothing.
    send(fd, frame)
    return ended


_JOB_FD = 3  # where a child keeps its end of the socket pair; every other descriptor above 2 is closed
_RULESET_FD = 4  # its Landlock ruleset, until it restricts itself with it


def run_child(conn_fd: int, output: int, parent: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> NoReturn:
    """What a freshly forked child does: get ready while idle, wait for its run, run it, exit."""
    try:
        if not _wait_and_run(conn_fd, output, parent, libc, wall, ruleset):
            # What the script started is in the group: kill it, and this process with it.
            os.killpg(0, signal.SIGKILL)
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a child must never return into the fork server's loop
        traceback.print_exc()  # into the run's log once the pipe is in place, else the fork server's
    finally:
        os._exit(EXIT_RUNNER_FAILED)


def _wait_and_run(conn_fd: int, output: int, parent: int, libc: ctypes.CDLL, wall: Wall, ruleset: int) -> bool:
    signal.set_wakeup_fd(-1)
    _capture_output(output)
    if ruleset == _JOB_FD:
        ruleset = os.dup(ruleset)
    os.dup2(conn_fd, _JOB_FD)
    if ruleset >= 0:
        if ruleset != _RULESET_FD:
            os.dup2(ruleset, _RULESET_FD)
        ruleset = _RULESET_FD
    # The fork server's other descriptors (its listener, its clients, other runs' pipes, the
    # folders its rules name) are not the script's business.
    os.closerange(_RULESET_FD + 1 if ruleset >= 0 else _JOB_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the fork server's stdin is its parent's pipe: not the script's
    os.close(devnull)
    # _signal, not signal: its wrapper turns each answer into an enum, which a child pays in copied pages.
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(signal.SIGINT, signal.default_int_handler)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # an idle child must not outlive the fork server
    if os.getppid() != parent:  # the fork server died before the line above
        return True
    os.setsid()  # its own process group: a kill of the group reaches whatever the script starts
    wall.child_ready()
    return run_one(_JOB_FD, libc, wall, ruleset)
