"""The fork server (`flowmill _forkserver`): a long-lived process that keeps children forked
ahead of demand and watches the runs they are given.

It has imported what scripts usually need (see preload.py), then keeps a few children forked,
each blocked reading its job from a socket pair (what a child does: runner.py). A child runs
exactly one script and exits; the fork server forks a replacement once the run is handed over,
so the fork is off the critical path of the next run.

The fork server also watches the runs, so that the Flowmill server does not have to: it
reads each child's output pipe into log lines (within the job's limits), enforces the
timeout, kills a run on request, and sees how a child ended when it reaps it. The Flowmill
server keeps one connection to it and multiplexes its runs over it (the frames: protocol.py).

The fork server exits when its stdin closes: that is the Flowmill server going away, even by
`kill -9`. Its children die with it (PR_SET_PDEATHSIG). A client's connection that closes
takes that client's runs with it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

import msgspec

from app.runtimes.python.folders import make_run_root, remove_folder
from app.runtimes.python.output import RunOutput
from app.runtimes.python.preload import preload
from app.runtimes.python.protocol import (
    HEADER,
    MAX_ERROR_TEXT,
    Ack,
    Checkpoint,
    Ended,
    Finished,
    FrameReader,
    Output,
    Proceed,
    Run,
    Step,
    Suspended,
    child_frames,
    client_frames,
    encode_frame,
)
from app.runtimes.python.runner import (
    open_standard_streams,
    reset_environment,
    run_child,
)
from app.runtimes.python.wall import IS_LINUX, WALL, Wall, orphans

FORK_BATCH = 4  # children forked in a row while runs are in flight (see top_up)
_REAP_FLAGS = os.WNOHANG | (WALL if IS_LINUX else 0)  # also children cloned without SIGCHLD
SWEEP_S = 0.02  # between two looks for what killed runs left behind


class _Child:
    """A forked child: its pid, the fork server's end of its socket pair, its output pipe."""

    __slots__ = ("pid", "conn", "output_fd")

    def __init__(self, pid: int, conn: socket.socket, output_fd: int) -> None:
        self.pid = pid
        self.conn = conn
        self.output_fd = output_fd


class _Client:
    """A connection from a Flowmill server; its runs end with it."""

    SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long is dropped

    def __init__(self, conn: socket.socket) -> None:
        conn.settimeout(self.SEND_TIMEOUT_S)
        self.conn = conn
        self.frames = FrameReader(64 * 1024 * 1024)
        self.runs: dict[int, _Running] = {}
        self.gone = False

    def send(self, message: Any) -> None:
        if self.gone:
            return
        try:
            self.conn.sendall(encode_frame(message))
        except OSError:
            self.gone = True


class _Running:
    """A run in a child, as the fork server watches it."""

    def __init__(self, client: _Client, request: Run, child: _Child) -> None:
        self.client = client
        self.id = request.id
        self.child = child
        self.started = time.monotonic()
        self.deadline = self.started + request.timeout_s if request.timeout_s is not None else None
        self.timeout_s = request.timeout_s
        self.output = RunOutput(child.output_fd, request.max_log_lines, request.max_log_bytes)
        self.answer = FrameReader(request.max_result_bytes + 16 * MAX_ERROR_TEXT)
        self.output_open = True
        self.conn_open = True
        self.exit_status: int | None = None


class _ForkServer:
    """The fork server's loop: idle children, clients, and the runs they asked for."""

    def __init__(self, listener: socket.socket, idle: int, libc: ctypes.CDLL, wall: Wall,
                 run_root: str | None, client_pid: int) -> None:
        self.listener = listener
        self.idle_target = max(1, idle)  # with none, a run would wait for a fork
        self.libc = libc
        self.wall = wall
        self.run_root = run_root  # each child's own folder (its cwd, HOME and TMPDIR) is made in it
        self.client_pid = client_pid  # the Flowmill server: the one process that may connect
        self.selector = selectors.DefaultSelector()
        self.idle: list[_Child] = []
        self.running: dict[int, _Running] = {}  # by pid
        self.clients: set[_Client] = set()
        self.me = os.getpid()
        self.folders: dict[int, str] = {}  # each live child's own folder, by pid
        self.leftover_folders: list[str] = []  # not removed yet (a process of the run still wrote in it)
        self.slots: set[int] = set()  # the numbers of the children's folders that exist
        self.killed: set[int] = set()  # children killed by the fork server, not reaped yet
        self.sweeping = False  # what killed runs left behind is being swept

    # -- children --------------------------------------------------------------------------------

    def fork(self) -> _Child | None:
        folder, ruleset = self._own_folder()
        if folder is None and self.run_root is not None:
            return None
        ours, theirs = socket.socketpair()
        output_r, output_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as error:  # out of processes or memory: try again on the next round
            print(f"flowmill fork server: fork failed: {error}", file=sys.stderr, flush=True)
            for fd in (output_r, output_w):
                os.close(fd)
            ours.close()
            theirs.close()
            if ruleset >= 0:
                os.close(ruleset)
            if folder is not None:
                self._remove(folder)
            return None
        if pid == 0:
            run_child(theirs.fileno(), output_w, self.me, self.libc, self.wall, ruleset)
        theirs.close()
        os.close(output_w)
        if ruleset >= 0:
            os.close(ruleset)
        if folder is not None:
            self.folders[pid] = folder
            self.wall.limit_processes(int(folder.rpartition("/")[2]), pid)
        return _Child(pid, ours, output_r)

    def _own_folder(self) -> tuple[str | None, int]:
        """A new child's folder (its cwd, HOME and TMPDIR), and its Landlock ruleset, which grants
        that folder."""
        if self.run_root is None:
            return None, -1
        # The first number not in use: names come back, and so do the environment's strings (glibc
        # keeps every value ever given to setenv, so new names each time would grow it forever).
        slot = 1
        while slot in self.slots:
            slot += 1
        folder = f"{self.run_root}/{slot}"
        try:
            os.mkdir(folder, 0o700)
            fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                ruleset = self.wall.ruleset(fd)
            finally:
                os.close(fd)
        except OSError as error:
            print(f"flowmill fork server: cannot prepare a child's wall: {error}", file=sys.stderr, flush=True)
            remove_folder(folder)
            return None, -1
        os.environ["HOME"] = os.environ["TMPDIR"] = folder  # set here: in the child it costs copied pages
        os.chdir(folder)
        self.slots.add(slot)
        return folder, ruleset

    def top_up(self) -> None:
        """Fork children ahead of demand. While runs are in flight, fork only once none is
        ready, then `FORK_BATCH` at once: each fork costs the fork server a copy of every page it
        writes next (~60 per fork, ~100 more once per batch), so forks in a row share that cost;
        and a fork holds back the answers the fork server passes on, so they wait once per batch."""
        if self.running:
            if self.idle:
                return
            target = FORK_BATCH
        else:
            target = self.idle_target
        while len(self.idle) < target:
            child = self.fork()
            if child is None:
                return
            self.idle.append(child)

    def reap(self) -> None:
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, _REAP_FLAGS)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            self.killed.discard(pid)
            folder = self.folders.pop(pid, None)
            if folder is not None:  # one of ours (not a process a killed run left behind)
                if os.WIFSIGNALED(status) and self.wall.subreaper:
                    self.sweeping = True  # what it started may have left its group
                self._remove(folder)
            run = self.running.get(pid)
            if run is not None:
                run.exit_status = status
                self.read_answer(run)  # what it sent just before it exited
                if pid in self.running:
                    self.end(run, "crashed", exit_reason=describe_exit(status))
                continue
            for child in self.idle:
                if child.pid == pid:  # an idle child that died is replaced like one that ran
                    self.idle.remove(child)
                    child.conn.close()
                    os.close(child.output_fd)
                    break
        if reaped and self.leftover_folders:
            leftover, self.leftover_folders = self.leftover_folders, []
            for folder in leftover:
                self._remove(folder)

    def _remove(self, folder: str) -> None:
        if remove_folder(folder):
            self.slots.discard(int(folder.rpartition("/")[2]))
        else:
            self.leftover_folders.append(folder)

    def sweep(self) -> None:
        """Kill the processes that killed runs left behind: reparented to the fork server (their
        subreaper), they are its children without being runs. Killing one reparents its own
        children here in turn: sweep until a look finds none and every killed child is reaped."""
        if self.wall.proc_fd < 0:
            self.sweeping = False
            return
        known = {child.pid for child in self.idle} | set(self.running)
        found = orphans(self.wall.proc_fd, self.me, known)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not found and not self.killed:
            self.sweeping = False

    def kill_all(self) -> None:
        for child in [*self.idle, *(run.child for run in self.running.values())]:
            _kill_group(child.pid)
        # Then whatever is left, till none is: the fork server is going, and its runs with it.
        deadline = time.monotonic() + 2.0
        while self.wall.proc_fd >= 0 and time.monotonic() < deadline:
            left = orphans(self.wall.proc_fd, self.me, set())
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
            _reap_all()

    # -- clients ---------------------------------------------------------------------------------

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        if not _from(conn, self.client_pid):  # a run that found the socket, say: it gets nothing
            conn.close()
            return
        client = _Client(conn)
        self.clients.add(client)
        self.selector.register(conn, selectors.EVENT_READ, client)

    def from_client(self, client: _Client) -> None:
        try:
            data = client.conn.recv(1 << 16)
            bodies = client.frames.feed(data) if data else []
            requests = [client_frames.decode(body) for body in bodies]
        except (OSError, ValueError, msgspec.DecodeError):
            data, requests = b"", []
        for request in requests:
            if isinstance(request, Run):
                self.start(client, request)
            elif isinstance(request, Proceed):
                if request.id in client.runs:  # its step is stored: the child, waiting for its ack, goes on
                    try:
                        client.runs[request.id].child.conn.sendall(encode_frame(Ack(request.seq, request.pause)))
                    except OSError:
                        pass  # it died meanwhile: its reaping ends the run
            elif request.id in client.runs:
                self.kill(client.runs[request.id], "cancelled", "killed: the run was cancelled")
        if not data or client.gone:
            self.drop(client)

    def drop(self, client: _Client) -> None:
        """The client went away: so do its runs."""
        client.gone = True
        for run in list(client.runs.values()):
            self.kill(run, "cancelled", "killed: the client went away")
        self.clients.discard(client)
        self.selector.unregister(client.conn)
        client.conn.close()

    # -- runs ------------------------------------------------------------------------------------

    def start(self, client: _Client, request: Run) -> None:
        child = self.idle.pop() if self.idle else self.fork()
        if child is None:
            client.send(Ended(request.id, "crashed", exit_reason="the fork server could not fork a child"))
            return
        run = _Running(client, request, child)
        self.running[child.pid] = run
        client.runs[run.id] = run
        try:
            child.conn.sendall(HEADER.pack(len(request.job)) + bytes(request.job))  # the child is waiting for it
        except OSError:
            pass  # it died while idle: its reaping ends the run
        self.selector.register(child.conn, selectors.EVENT_READ, run)
        self.selector.register(child.output_fd, selectors.EVENT_READ, ("output", run))

    def read_answer(self, run: _Running) -> None:
        """Read what the child sent; end the run once it has said how it ended."""
        child = run.child
        while run.conn_open:
            try:
                data = child.conn.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                run.conn_open = False
                self.selector.unregister(child.conn)
                if run.exit_status is not None:
                    self.end(run, "crashed", exit_reason=describe_exit(run.exit_status))
                return  # otherwise its reaping says how it ended
            try:
                bodies = run.answer.feed(data)
                frames = [child_frames.decode(body) for body in bodies]
            except (ValueError, msgspec.DecodeError) as error:
                self.kill(run, "crashed", f"the child sent an unreadable message: {error}")
                return
            for frame in frames:
                if isinstance(frame, Checkpoint):  # passed on; the child waits for its Proceed
                    self.send_output(run)  # the lines printed before the step go first
                    run.client.send(Step(run.id, frame.seq, frame.name, frame.result, frame.replace))
                    continue
                if isinstance(frame, Finished):
                    self.end(run, "success", result=frame.result, args=frame.args)
                elif isinstance(frame, Suspended):
                    self.end(run, "suspended", wait=frame.wait)
                else:
                    self.end(run, "error", error=frame.error, args=frame.args)
                return

    def from_output(self, run: _Running) -> None:
        if not run.output.read():
            self._close_output(run)

    def _close_output(self, run: _Running) -> None:
        if run.output_open:
            run.output_open = False
            self.selector.unregister(run.output.fd)

    def kill(self, run: _Running, status: str, reason: str) -> None:
        _kill_group(run.child.pid)
        if self.wall.subreaper:
            self.killed.add(run.child.pid)
            self.sweeping = True  # what left the group is reparented here once the child is gone
        self.end(run, status, exit_reason=reason)

    def end(self, run: _Running, status: str, result: msgspec.Raw = msgspec.Raw(b"null"),
            error: dict[str, str] | None = None, exit_reason: str = "", args: msgspec.Raw = msgspec.Raw(b"null"),
            wait: dict[str, Any] | None = None) -> None:
        """Send the rest of the output, then the outcome; forget the run."""
        if run.output_open:
            run.output.drain()  # the child wrote everything before its outcome: read it all
            self._close_output(run)
        os.close(run.output.fd)
        run.output.finish()
        self.send_output(run)
        run.client.send(Ended(run.id, status, result, error, exit_reason, time.monotonic() - run.started, args, wait))
        if run.conn_open:
            run.conn_open = False
            self.selector.unregister(run.child.conn)
        run.child.conn.close()
        self.running.pop(run.child.pid, None)
        run.client.runs.pop(run.id, None)

    def send_output(self, run: _Running) -> None:
        if run.output.pending:
            lines, run.output.pending = run.output.pending, []
            run.client.send(Output(run.id, lines))

    def check_deadlines(self, now: float) -> float:
        """Kill the runs past their timeout; seconds until the next deadline (at most 1)."""
        wait = 1.0
        for run in list(self.running.values()):
            if run.deadline is None:
                continue
            if now >= run.deadline:
                self.kill(run, "timeout", f"killed: the run exceeded its timeout of {run.timeout_s:g} s")
            else:
                wait = min(wait, run.deadline - now)
        return wait


def _from(conn: socket.socket, client_pid: int) -> bool:
    """Whether `conn` comes from process `client_pid` of this user (the kernel says, not the peer)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # macOS: the socket's folder (0700) is the only check
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid == client_pid and uid == os.getuid()


def _reap_all() -> None:
    """Reap every child that has ended, keeping no account (the fork server is going)."""
    while True:
        try:
            if os.waitpid(-1, _REAP_FLAGS)[0] == 0:
                return
        except ChildProcessError:
            return


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # the group first: it holds what the script started
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def describe_exit(status: int) -> str:
    """A wait status in words: "killed by signal SIGABRT", "exited with code 1"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by signal {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with code {os.WEXITSTATUS(status)}"

def _listen(path: str, backlog: int) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)  # left by a fork server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(backlog)
    return listener


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(0)


NICENESS = 10


def serve(socket_path: str, idle: int, ready_fd: int | None = None, lean: bool = False, walled: bool = True,
          denied: list[str] | None = None, max_file_bytes: int | None = None, max_processes: int | None = None,
          client_pid: int | None = None) -> None:
    """The fork server's main loop (the hidden `flowmill _forkserver` command): keep `idle`
    children ready, serve clients on `socket_path`, write one byte to `ready_fd` once runs can
    be served (then the line that says which walls hold), and end when stdin closes or on
    SIGTERM. A `lean` one preloads only the light modules. Children are walled off
    (`walled`: see wall.py) from the `denied` folders (the data dir) and from each other; only
    `client_pid` (default: the parent) may connect."""
    # User code yields the CPU to the server when both want it: accepting a request (and
    # committing its run) stays fast under load, and queued runs use what is left.
    os.nice(NICENESS)
    socket_path = os.path.abspath(socket_path)  # the cwd changes: it is each new child's folder
    client_pid = client_pid or os.getppid()
    denied = [os.path.realpath(path) for path in denied or ()]
    run_root = make_run_root(denied) if walled else None
    # Sealed before the imports: a probe forks, and a smaller process forks faster.
    wall = Wall(ctypes.CDLL(None, use_errno=True), denied + ([run_root] if run_root else []), walled, max_file_bytes,
                max_processes)
    wall.seal_fork_server()
    walls = wall.describe()
    print(f"flowmill fork server: {walls}", file=sys.stderr, flush=True)
    libc = ctypes.CDLL(None, use_errno=True)  # for prctl and fflush in the children
    preload(lean, libc)
    wall.use(libc)
    reset_environment()
    open_standard_streams()
    listener = _listen(socket_path, 256)
    wake_r, wake_w = os.pipe()  # a SIGCHLD wakes the selector through this
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for Flowmill, which then stops us
    server = _ForkServer(listener, idle, libc, wall, run_root, client_pid)
    parent_pipe = sys.stdin.fileno()
    selector = server.selector
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    selector.register(parent_pipe, selectors.EVENT_READ, "parent")
    # What is loaded now is shared with every child: keep the collector from touching it (and
    # so copying its pages) in each of them. Hand back the memory that importing freed (the
    # compiler's, when there is no bytecode cache): every fork would copy its page tables.
    gc.collect()
    gc.freeze()
    libc.malloc_trim(0)
    try:
        while True:
            server.top_up()
            if ready_fd is not None:
                os.write(ready_fd, b"1" + walls.encode()[:2048])
                os.close(ready_fd)
                ready_fd = None
            wait = server.check_deadlines(time.monotonic())
            if server.sweeping:
                wait = min(wait, SWEEP_S)
            for key, _events in selector.select(wait):
                what = key.data
                if what == "wake":
                    os.read(wake_r, 4096)
                elif what == "accept":
                    server.accept()
                elif what == "parent":
                    if not os.read(parent_pipe, 4096):
                        return  # the Flowmill server is gone
                elif isinstance(what, _Client):
                    if not what.gone:
                        server.from_client(what)
                elif isinstance(what, _Running):
                    if what.child.pid in server.running:
                        server.read_answer(what)
                elif isinstance(what, tuple):
                    if what[1].output_open:
                        server.from_output(what[1])
            server.reap()
            if server.sweeping:
                server.sweep()
            for run in list(server.running.values()):
                server.send_output(run)
            for client in [client for client in server.clients if client.gone]:  # a send to it failed
                server.drop(client)
    finally:
        server.kill_all()
        server.wall.release_processes()
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        if run_root is not None:
            remove_folder(run_root)


def main(argv: list[str]) -> int:
    """`flowmill _forkserver ...`, dispatched before the rest of Flowmill is imported: what the
    fork server imports, every fork copies."""
    import argparse

    parser = argparse.ArgumentParser(prog="flowmill _forkserver")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--idle", type=int, default=2)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--lean", action="store_true")
    parser.add_argument("--no-wall", action="store_true", help="run scripts NOT walled off (unsafe: measurements only)")
    parser.add_argument("--deny", action="append", default=[], help="a folder no run may read or write (the data dir)")
    parser.add_argument("--max-file-bytes", type=int, default=None)
    parser.add_argument("--max-processes", type=int, default=None)
    parser.add_argument("--client-pid", type=int, default=None, help="the one process that may connect (default: the parent)")
    args = parser.parse_args(argv)
    serve(args.socket, args.idle, args.ready_fd, args.lean, not args.no_wall, args.deny, args.max_file_bytes,
          args.max_processes, args.client_pid)
    return 0
