"""User code is walled off: a script that tries every way in to the server's keys, database,
environment, memory and sockets gets nothing, on SQLite and PostgreSQL (whose password must
not reach it either); ordinary scripts still work; every process a run starts dies with it;
the data dir is 0700 and its files 0600."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import FlowmillServer, wait_for

PG_PASSWORD = "sekrit-pg-4711"
SERVER_SECRET = "server-only-secret-0815"

# What a hostile script tries. Each attempt's outcome is recorded as text: what it read, or
# "denied: <error>". The test then looks for any secret in the whole answer.
ATTACK = r'''
import ctypes, glob, json, os, signal, socket, sqlite3, struct, subprocess, sys

def main(home: str, server: int, forkservers: list):
    found = {}
    def attempt(name, action):
        try:
            found[name] = "got: " + repr(action())[:4000]
        except BaseException as error:
            found[name] = f"denied: {type(error).__name__}: {error}"[:300]

    def read(path, size=1 << 20):
        with open(path, "rb") as f:
            return f.read(size)

    # The data dir, as found from the command lines of the fork server and the server.
    attempt("cmdline of the fork server", lambda: read(f"/proc/{os.getppid()}/cmdline"))
    attempt("cmdline of the server", lambda: read(f"/proc/{server}/cmdline"))
    for name in ("master.key", "jwt.key", "flowmill.db", "flowmill.db-wal", "server.log", "run/forkserver.log"):
        attempt(f"read {name}", lambda name=name: read(os.path.join(home, name)))
    attempt("list the data dir", lambda: os.listdir(home))
    attempt("list run/", lambda: os.listdir(os.path.join(home, "run")))
    attempt("glob the data dir", lambda: glob.glob(home + "/**", recursive=True) or (_ for _ in ()).throw(OSError("empty")))
    attempt("write into the data dir", lambda: open(os.path.join(home, "planted"), "w").write("x"))
    attempt("remove master.key", lambda: os.unlink(os.path.join(home, "master.key")))
    attempt("rename jwt.key", lambda: os.rename(os.path.join(home, "jwt.key"), os.path.join(home, "jwt.old")))
    attempt("hard link master.key", lambda: os.link(os.path.join(home, "master.key"), os.environ["TMPDIR"] + "/k"))
    def through_symlink():
        link = os.environ["TMPDIR"] + "/link"
        os.symlink(os.path.join(home, "master.key"), link)
        return read(link)
    attempt("read through a symlink", through_symlink)
    def make_admin():
        db = sqlite3.connect(os.path.join(home, "flowmill.db"), timeout=1)
        db.execute("UPDATE user_account SET is_admin = 1")
        db.commit()
        return "written"
    attempt("write the database", make_admin)
    attempt("read the database with sqlite", lambda: sqlite3.connect(
        f"file:{home}/flowmill.db?mode=ro", uri=True).execute("SELECT * FROM sqlite_master").fetchall())
    # The server's and fork servers' memory, environment and descriptors.
    for pid in (server, os.getppid(), *forkservers):
        for part in ("environ", "mem", "maps", "cwd/master.key", f"root{home}/master.key", "stack", "auxv"):
            attempt(f"read /proc/{pid}/{part}", lambda pid=pid, part=part: read(f"/proc/{pid}/{part}", 4096))
        attempt(f"list /proc/{pid}/fd", lambda pid=pid: os.listdir(f"/proc/{pid}/fd"))
        def open_descriptors(pid=pid):
            got = []
            for fd in range(64):
                for how in (os.readlink, read):
                    try:
                        got.append(how(f"/proc/{pid}/fd/{fd}"))
                    except OSError:
                        pass
            if not got:
                raise PermissionError("no descriptor opened or resolved")
            return got
        attempt(f"open /proc/{pid}/fd/*", open_descriptors)
        attempt(f"signal {pid}", lambda pid=pid: os.kill(pid, signal.SIGCONT))
        libc = ctypes.CDLL(None, use_errno=True)
        def ptrace(pid=pid):
            if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return "attached"
        attempt(f"ptrace {pid}", ptrace)
    # The fork servers' sockets: a run of its own, started behind the server's back.
    job = json.dumps({"source": "def main(): return open(%r).read()" % os.path.join(home, "master.key"),
                      "path": "f/x/y", "args": {}, "env": {}}).encode()
    frame = json.dumps({"t": "run", "id": 1, "job": json.loads(job)}).encode()
    for name in ("fork.sock", "fork-lean.sock"):
        def connect(name=name):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(5)
            conn.connect(os.path.join(home, "run", name))
            conn.sendall(struct.pack(">I", len(frame)) + frame)
            answer = conn.recv(65536)
            if not answer:
                raise ConnectionResetError("closed without a word")
            return answer
        attempt(f"connect to {name}", connect)
    attempt("ls /proc", lambda: [p for p in os.listdir("/proc") if p.isdigit() and int(p) in (server, *forkservers)]
            or (_ for _ in ()).throw(FileNotFoundError("not listed")))
    found["environment"] = json.dumps(dict(os.environ))
    found["subprocess environment"] = subprocess.run(["env"], capture_output=True, text=True).stdout
    found["descriptors"] = sorted(os.listdir("/proc/self/fd"))
    found["capabilities"] = [line for line in open("/proc/self/status") if line.startswith(("Cap", "NoNewPrivs"))]
    return found
'''

# What an ordinary script does: all of it must still work.
ORDINARY = r'''
import json, os, subprocess, tempfile
import httpx

def main():
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("hello")
    made = open(f.name).read()
    os.makedirs("sub/dir", exist_ok=True)
    os.rename(f.name, "sub/dir/moved")
    echoed = subprocess.run(["sh", "-c", "echo $HOME | wc -c; cat /etc/hostname"], capture_output=True, text=True).stdout
    me = httpx.get(os.environ["WM_BASE_URL"] + "/api/w/" + os.environ["WM_WORKSPACE"] + "/users/whoami",
                   headers={"Authorization": "Bearer " + os.environ["WM_TOKEN"]}, timeout=10).json()
    return {"made": made, "moved": open("sub/dir/moved").read(), "echoed": echoed, "me": me,
            "tmp": tempfile.gettempdir(), "home": os.environ["HOME"], "cwd": os.getcwd(),
            "hostname": open("/etc/hostname").read()}
'''

# A script that leaves a process running: after setsid, a double fork, and a grandchild of
# that; it says the pids, and then returns, sleeps past its timeout, or waits to be cancelled.
LEAVE_BEHIND = r'''
import os, sys, time

def spawn_daemon(pid_file):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            with open(pid_file, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(600)
        os._exit(0)

def main(pid_file: str, then: str = "return"):
    spawn_daemon(pid_file)
    deadline = time.time() + 10
    while time.time() < deadline and not os.path.exists(pid_file):
        time.sleep(0.01)
    print("daemon started", flush=True)
    if then == "sleep":
        time.sleep(600)
    return open(pid_file).read()
'''


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def walled(backend: str) -> Iterator[FlowmillServer]:
    """A server whose environment holds secrets (a PostgreSQL URL with a password, PGPASSWORD,
    a variable of its own) that no run may find."""
    instance = FlowmillServer(backend, env={"PGPASSWORD": PG_PASSWORD, "FLOWMILL_TEST_SECRET": SERVER_SECRET,
                                            "SERVER_ONLY_SECRET": SERVER_SECRET})
    if backend == "postgres":  # trust auth lets it in; the password must still reach no run
        instance.database_url = instance.database_url.replace("postgres@", f"postgres:{PG_PASSWORD}@")
        instance.env["FLOWMILL_DATABASE_URL"] = instance.database_url
    instance.start()
    instance.admin_token()
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def api(walled: FlowmillServer) -> Iterator[httpx.Client]:
    with walled.client(walled.admin_token()) as client:
        yield client


def save(api: httpx.Client, path: str, content: str, **settings: object) -> None:
    response = api.post("/api/v1/scripts", json={"path": path, "content": content, **settings})
    assert response.status_code in (200, 201), response.text


def forkserver_pids(server: FlowmillServer) -> list[int]:
    """The server's children: its two fork servers."""
    assert server.process is not None
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == server.process.pid:
                found.append(int(entry.name))
    return found


def secrets_of(server: FlowmillServer) -> list[str]:
    """Every secret a run must not learn: the keys, the PostgreSQL password, the server's own variable."""
    values = [PG_PASSWORD, SERVER_SECRET]
    for name in ("master.key", "jwt.key"):
        values.append((server.home / name).read_text().strip())
    return values


def test_a_hostile_script_gets_nothing(walled: FlowmillServer, api: httpx.Client) -> None:
    save(api, "f/evil/probe", ATTACK)
    api.post("/api/v1/jobs/run_wait_result/p/f/evil/probe", json={"home": str(walled.home), "server": 1,
                                                                  "forkservers": []})  # both fork servers up
    pids = forkserver_pids(walled)
    assert len(pids) == 2, pids
    before = (walled.home / "master.key").read_bytes(), (walled.home / "jwt.key").read_bytes()
    response = api.post("/api/v1/jobs/run_wait_result/p/f/evil/probe",
                        json={"home": str(walled.home), "server": walled.process.pid, "forkservers": pids}, timeout=60)
    assert response.status_code == 200, response.text
    found = response.json()
    text = json.dumps(found)
    for secret in secrets_of(walled):
        assert secret not in text, f"a run learned a secret: {[k for k, v in found.items() if secret in str(v)]}"
    attempts = {name: outcome for name, outcome in found.items() if isinstance(outcome, str) and outcome[:6] in ("got: ", "denied")}
    leaked = {name: outcome for name, outcome in attempts.items() if not outcome.startswith("denied")}
    assert not leaked, leaked
    assert len(attempts) > 45
    environment = set(json.loads(found["environment"])) - {"FLOWMILL_JOB_ID"}  # the run's own id, given on purpose
    assert not any(key.startswith(("FLOWMILL_", "PG")) for key in environment), environment
    assert "PGPASSWORD" not in found["subprocess environment"] and "FLOWMILL_DATABASE_URL" not in found["subprocess environment"]
    # Its own pipes only: the job's socket (3) and the listing's own descriptor.
    assert len(found["descriptors"]) <= 5, found["descriptors"]
    if os.geteuid() == 0:  # root without capabilities
        assert "CapEff:\t0000000000000000\n" in found["capabilities"], found["capabilities"]
    # Nothing was written: the keys are as they were, no admin was made, nothing was planted.
    assert ((walled.home / "master.key").read_bytes(), (walled.home / "jwt.key").read_bytes()) == before
    assert not (walled.home / "planted").exists()
    assert walled.process.poll() is None


def test_a_lean_script_is_walled_off_too(walled: FlowmillServer, api: httpx.Client) -> None:
    # Only light modules: it runs from the lean fork server.
    save(api, "f/evil/lean", (
        "import os\n"
        "def main(home: str, server: int):\n"
        "    found = {}\n"
        "    for path in (home + '/master.key', home + '/jwt.key', f'/proc/{server}/environ', f'/proc/{os.getppid()}/environ'):\n"
        "        try:\n"
        "            found[path] = open(path).read()\n"
        "        except OSError as error:\n"
        "            found[path] = 'denied: ' + str(error)\n"
        "    return found\n"))
    found = api.post("/api/v1/jobs/run_wait_result/p/f/evil/lean", json={"home": str(walled.home), "server": walled.process.pid}).json()
    assert all(outcome.startswith("denied") for outcome in found.values()), found


def test_ordinary_scripts_still_work(walled: FlowmillServer, api: httpx.Client) -> None:
    save(api, "f/ok/ordinary", ORDINARY)
    response = api.post("/api/v1/jobs/run_wait_result/p/f/ok/ordinary", json={}, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["made"] == "hello" and result["moved"] == "hello"
    assert result["me"]["username"] == "admin", result["me"]
    assert result["hostname"] and result["hostname"] in result["echoed"]
    # Its own folder, outside the data dir: HOME, TMPDIR and cwd.
    assert result["tmp"] == result["home"] == result["cwd"], result
    assert not Path(result["home"]).resolve().is_relative_to(walled.home.resolve())
    # Removed once the run is over.
    wait_for(lambda: not Path(result["home"]).exists(), 5, "the run's folder to be removed")


def test_runs_do_not_share_their_folders(api: httpx.Client) -> None:
    save(api, "f/ok/mine", "import os\ndef main(other: str = ''):\n    found = os.listdir('.')\n"
                           "    open('mine', 'w').write('x')\n"
                           "    try:\n        return [os.getcwd(), found, os.listdir(other) if other else None]\n"
                           "    except OSError as error:\n        return [os.getcwd(), found, 'denied']\n")
    first = api.post("/api/v1/jobs/run_wait_result/p/f/ok/mine", json={}).json()
    parent = str(Path(first[0]).parent)
    second = api.post("/api/v1/jobs/run_wait_result/p/f/ok/mine", json={"other": parent}).json()
    # A folder's number may be reused by a later run, never its content: each starts empty, and
    # the folder holding the others is out of reach.
    assert first[1] == [] and second[1] == [] and second[2] == "denied", (first, second)


@pytest.mark.parametrize("ending", ["normal", "timeout", "cancel"])
def test_a_setsid_double_fork_dies_with_its_run(walled: FlowmillServer, api: httpx.Client, tmp_path: Path,
                                                ending: str) -> None:
    save(api, f"f/leave/{ending}", LEAVE_BEHIND, **({"timeout": 2} if ending == "timeout" else {}))
    pid_file = f"/dev/shm/flowmill-test-{os.getpid()}-{ending}-{time.time_ns()}"
    args = {"pid_file": pid_file, "then": "return" if ending == "normal" else "sleep"}
    try:
        if ending == "cancel":
            job_id = api.post(f"/api/v1/jobs/run/p/f/leave/{ending}", json=args).json()["id"]
            wait_for(lambda: os.path.exists(pid_file) and Path(pid_file).read_text().strip(), 20, "the daemon")
            api.post(f"/api/v1/jobs/{job_id}/cancel", json={}).raise_for_status()
            wait_for(lambda: api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "CANCELLED", 10, "the cancel")
        else:
            response = api.post(f"/api/v1/jobs/run_wait_result/p/f/leave/{ending}", json=args, timeout=60)
            assert response.status_code == (200 if ending == "normal" else 422), response.text
        pids = [int(line) for line in Path(pid_file).read_text().split()]
        assert pids
        wait_for(lambda: not any(alive(pid) for pid in pids), 3, f"the daemon's death after a run's {ending} end")
    finally:
        if os.path.exists(pid_file):
            os.unlink(pid_file)


FORK_MANY = """
import os, subprocess, time

def main():
    started = []
    try:
        for _ in range(60):
            started.append(subprocess.Popen(["sleep", "30"]))
    except OSError as error:
        refused = str(error)
    else:
        refused = None
    for process in started:
        process.kill()
    return {"started": len(started), "refused": refused}
"""


def test_a_run_starts_no_more_processes_than_its_limit(fresh_server: FlowmillServer) -> None:
    fresh_server.env["FLOWMILL_JOB_MAX_PROCESSES"] = "20"
    fresh_server.start()
    with fresh_server.client(fresh_server.admin_token()) as api:
        save(api, "f/limits/many", FORK_MANY)
        first = api.post("/api/v1/jobs/run_wait_result/p/f/limits/many", json={}, timeout=60).json()
        # The limit is the run's, not the server's: the next run has the whole of it again.
        second = api.post("/api/v1/jobs/run_wait_result/p/f/limits/many", json={}, timeout=60).json()
    for result in (first, second):
        assert result["refused"] is not None and 5 <= result["started"] < 20, result
    assert "processes a run" in fresh_server.output()


def test_a_run_writes_no_file_past_the_limit(fresh_server: FlowmillServer) -> None:
    fresh_server.env["FLOWMILL_JOB_MAX_FILE_MB"] = "1"
    fresh_server.start()
    with fresh_server.client(fresh_server.admin_token()) as api:
        save(api, "f/limits/big", "def main():\n    with open('big', 'wb') as f:\n"
                                  "        try:\n            f.write(b'x' * (3 << 20))\n            f.flush()\n"
                                  "        except OSError as error:\n            return str(error)\n    return 'written'\n")
        result = api.post("/api/v1/jobs/run_wait_result/p/f/limits/big", json={}).json()
    assert "too large" in result.lower(), result


def test_the_data_dir_is_private(fresh_server: FlowmillServer) -> None:
    home = fresh_server.home
    os.chmod(home, 0o755)
    loose = home / "master.key"
    loose.write_text(__import__("base64").b64encode(os.urandom(32)).decode())
    os.chmod(loose, 0o644)
    fresh_server.start()
    with fresh_server.client(fresh_server.admin_token()) as api:
        save(api, "f/ok/one", "def main():\n    return 1\n")
        api.post("/api/v1/jobs/run_wait_result/p/f/ok/one", json={}).raise_for_status()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    checked = []
    for path in [home, *home.rglob("*")]:
        if path.name == "server.log":  # written by the test harness, not the server
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        if path.name in ("master.key", "jwt.key", "flowmill.db", "run"):
            assert mode == expected, f"{path} is {oct(mode)}"
            checked.append(path.name)
    assert {"master.key", "jwt.key", "run"} <= set(checked)
