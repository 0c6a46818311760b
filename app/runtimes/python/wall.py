"""The wall around user code: what a run's processes may reach, and that they all die with it.

Linux gives the pieces; each is used where it is there, and `describe` says which are:

- A Landlock ruleset per child: read and execute on the system and the Python install, read
  on /proc and /sys, read-write on /dev, everything in the run's own temp folder, read on its
  dependency environment, and nothing else: not the data dir (keys, database, sockets). With
  ABI 6 and later its scope keeps signals and abstract unix sockets inside the run, so a run
  cannot signal the server or the fork server, and `kill(-1)` reaches only its own processes.
  A Landlocked process cannot ptrace, nor read /proc/<pid>/mem or environ of, anything outside
  its domain.
- The fork server is undumpable (so are its children: /proc/<pid>/environ, mem and fd are
  closed to other processes of the same user), sets no_new_privs for itself and its children,
  and gives up every capability before it forks (a root server's children are root without
  capabilities); run as root, it also mounts a /proc of its own with hidepid=ptraceable, so a
  run does not even see the server's processes.
- Each child is a subreaper: what a script leaves behind (even after setsid and a double
  fork) is reparented to it, and killed at the run's end. When the fork server kills a run
  (timeout, cancel), what survives is reparented to the fork server, itself a subreaper,
  which sweeps it.
- RLIMIT_FSIZE bounds the size of every file a run writes; RLIMIT_NPROC bounds its processes
  when the server is not root (a user namespace of its own makes the count the run's; the
  kernel never applies it to uid 0); as root, a pids cgroup per child slot does (cgroup v1's
  pids hierarchy, where it is mounted).

Everything a child does here is prepared in the fork server: ctypes functions built and
called once, structures made, and the ruleset itself built before the fork, so that the
child pays a few system calls and few copied pages.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterable

# -- Landlock (include/uapi/linux/landlock.h) ------------------------------------------------------

SYS_LANDLOCK_CREATE_RULESET = 444  # the same numbers on x86_64 and aarch64 (and every newer arch)
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the rights a rule on a file may hold
READ = READ_FILE | READ_DIR
READ_EXECUTE = READ | EXECUTE
DEVICES = READ | WRITE_FILE | TRUNCATE | IOCTL_DEV
EVERYTHING = (1 << 16) - 1


def fs_rights(abi: int) -> int:
    """Every filesystem right Landlock ABI `abi` knows (each is handled: what is not granted is denied)."""
    if abi >= 5:
        return EVERYTHING
    if abi >= 3:
        return (1 << 15) - 1
    if abi == 2:
        return (1 << 14) - 1
    return (1 << 13) - 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# -- prctl, capabilities, namespaces ------------------------------------------------------------------

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_SLAVE = 2, 4, 8, 1 << 14, 1 << 19
WALL = 0x40000000  # __WALL: wait for children however they were cloned


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


IS_LINUX = sys.platform.startswith("linux")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi(libc: ctypes.CDLL | None = None) -> int:
    """The Landlock ABI version of this kernel; 0 when there is none (not Linux, too old, disabled)."""
    if not IS_LINUX or os.uname().machine not in ("x86_64", "aarch64"):
        return 0
    libc = libc or _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, abi)


def make_undumpable() -> bool:
    """PR_SET_DUMPABLE 0: this process's /proc/<pid>/environ, mem, fd and maps are closed to
    every process without CAP_SYS_PTRACE, even of the same user; no core dump either."""
    if not IS_LINUX:
        return False
    return _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


# -- what is granted --------------------------------------------------------------------------------


def within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def grants(wanted: Iterable[tuple[str, int]], denied: Iterable[str]) -> list[tuple[str, int]]:
    """The (real path, rights) rules that grant `wanted` without granting anything inside a
    `denied` folder: a wanted folder that holds a denied one is replaced by its other entries,
    recursively (FLOWMILL_HOME=/opt/flowmill: every entry of /opt but flowmill). A symbolic
    link leads to its target, which is granted under the same rule (or not at all, when it
    holds a denied folder). A path inside another granted with at least its rights is dropped."""
    denied = [os.path.realpath(path) for path in denied]
    found: dict[str, int] = {}

    def add(path: str, rights: int) -> None:  # `path` is real: no link in it
        if not os.path.exists(path) or any(within(path, folder) for folder in denied):
            return
        if not any(within(folder, path) for folder in denied):
            found[path] = found.get(path, 0) | rights
            return
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            return
        for entry in entries:
            child = os.path.join(path, entry)
            if os.path.islink(child):
                target = os.path.realpath(child)
                if not any(within(folder, target) for folder in denied):  # else: not worth its other entries
                    add(target, rights)
            else:
                add(child, rights)

    for path, rights in wanted:
        if path:
            add(os.path.realpath(path), rights)
    kept = []
    for path in sorted(found):
        rights = found[path]
        if os.path.isfile(path):
            rights &= FILE_RIGHTS
        if any(other != path and within(path, other) and found[other] & rights == rights for other in found):
            continue
        kept.append((path, rights))
    return kept


def system_paths() -> list[tuple[str, int]]:
    """What any run may use: the system, the Python install and this program's own code."""
    wanted = [(path, READ_EXECUTE) for path in ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
                                                  "/etc", "/opt")]
    wanted += [(path, READ_EXECUTE) for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.executable)]
    wanted += [(os.path.abspath(path), READ_EXECUTE) for path in sys.path if path and os.path.isdir(path)]
    resolv = os.path.realpath("/etc/resolv.conf")  # often a link into /run, which is not granted
    wanted += [(resolv, READ), ("/proc", READ), ("/sys", READ), ("/dev", DEVICES), ("/dev/shm", EVERYTHING)]
    return wanted


# -- the wall, prepared in the fork server, entered by each child ---------------------------------------


class Wall:
    """What the fork server prepares once, and what each child does with it."""

    def __init__(self, libc: ctypes.CDLL, denied: list[str], enabled: bool = True,
                 max_file_bytes: int | None = None, max_processes: int | None = None) -> None:
        self.libc = libc
        self.denied = denied
        self.enabled = enabled and IS_LINUX
        self.max_file_bytes = max_file_bytes
        self.max_processes = max_processes
        self.abi = landlock_abi(libc) if self.enabled else 0
        self.handled = fs_rights(self.abi) if self.abi else 0
        self.scoped = (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if self.abi >= 6 else 0
        self.subreaper = IS_LINUX
        self.own_proc = False  # a /proc with hidepid=ptraceable, in a mount namespace of the fork server's
        self.capabilities_dropped = False
        self.user_namespace = False  # each child in a user namespace of its own, for RLIMIT_NPROC
        self.notes: list[str] = []  # what could not be set up, and why
        self.proc_fd = -1
        self.pids_root: str | None = None  # root: the pids cgroup folder of this fork server's children
        self._pid_groups: set[int] = set()
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._rules: list[_PathBeneath] = []
        self._rule_refs: tuple[object, ...] = ()  # byref() of each rule, made once
        self._attr = _RulesetAttr(self.handled, 0, self.scoped)
        self._attr_ref = ctypes.byref(self._attr)
        self._attr_size = ctypes.sizeof(_RulesetAttr) if self.abi >= 6 else (16 if self.abi >= 4 else 8)
        self._own = _PathBeneath(self.handled, -1)  # everything, in the child's own folder
        self._env = _PathBeneath(READ_EXECUTE & self.handled, -1)
        self._env_ref = ctypes.byref(self._env)
        self._nproc = (max_processes, max_processes)
        self._flags = os.WNOHANG | WALL
        self.use(libc)

    def use(self, libc: ctypes.CDLL) -> None:
        """Call `libc` in children: the one the fork server made last, after its imports, whose
        functions lie with the other objects a child touches (each page touched is copied)."""
        self.libc = libc
        self._waitpid = libc.waitpid  # built and called here: ctypes's first call costs pages a child would copy
        if IS_LINUX:
            self._waitpid(0x7FFFFFFF, None, os.WNOHANG)  # no such child: nothing reaped

    # -- in the fork server ------------------------------------------------------------------------

    def seal_fork_server(self) -> None:
        """What the fork server does once, for itself and every child it forks."""
        if not IS_LINUX:
            return
        libc = self.libc
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the system's, for sweeps
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # what a killed run leaves comes here, to be swept
        if self.max_file_bytes:  # inherited by every child (and the fork server writes no large file)
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))
        if not self.enabled:
            return
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # needed by Landlock; and no setuid program gains anything
        if os.geteuid() == 0:
            self._mount_own_proc()
        if self.max_processes and os.geteuid() == 0 and self.pids_root is None:
            self._prepare_pids()  # before the capabilities go
        self._drop_capabilities()
        if self.max_processes and os.geteuid() != 0:
            self.user_namespace = self._probe_user_namespace()
        elif self.max_processes and self.pids_root is None:
            self.notes.append("no per-run process limit: the kernel does not apply RLIMIT_NPROC to uid 0, "
                              "and no pids cgroup could be made")
        self._prepare_rules()

    # -- a pids cgroup per child (root): RLIMIT_NPROC never binds uid 0 ----------------------------

    def _prepare_pids(self) -> bool:
        """A folder of the pids controller (cgroup v1, where it is mounted on its own) for this
        fork server's children: each child slot gets a group of its own, made once and reused,
        with `pids.max`; a child is moved into its slot's group before its job comes."""
        hierarchy = "/sys/fs/cgroup/pids"
        if not os.path.isfile(f"{hierarchy}/cgroup.procs"):
            return False
        # One folder for every fork server, left in place: without capabilities a fork server can
        # remove its own folder inside it, not one at the top of the hierarchy.
        shared = f"{hierarchy}/flowmill"
        root = f"{shared}/{os.getpid()}"
        try:
            os.makedirs(shared, 0o755, exist_ok=True)
            _remove_stale_groups(shared)
            os.mkdir(root, 0o755)
        except OSError as error:
            self.notes.append(f"no pids cgroup: {error.strerror}")
            return False
        self.pids_root = root
        return True

    def limit_processes(self, slot: int, pid: int) -> None:
        """Put child `pid` in the group of `slot` (its processes and threads at most
        `max_processes`, whatever it starts included); in the fork server, before the job."""
        if self.pids_root is None:
            return
        group = f"{self.pids_root}/{slot}"
        try:
            if slot not in self._pid_groups:
                os.mkdir(group, 0o755)
                self._pid_groups.add(slot)
                with open(f"{group}/pids.max", "w") as limit:
                    limit.write(str(self.max_processes))
            with open(f"{group}/cgroup.procs", "w") as procs:
                procs.write(str(pid))
        except OSError as error:
            print(f"flowmill fork server: no process limit for a child: {error}", file=sys.stderr, flush=True)

    def release_processes(self) -> None:
        """Remove the groups (the fork server is going; its children are gone)."""
        if self.pids_root is None:
            return
        import time

        left = set(self._pid_groups)
        deadline = time.monotonic() + 2.0
        while True:
            for slot in sorted(left):
                try:
                    os.rmdir(f"{self.pids_root}/{slot}")
                    left.discard(slot)
                except FileNotFoundError:
                    left.discard(slot)
                except OSError:
                    pass  # busy: a killed child not reaped yet
            if not left or time.monotonic() > deadline:
                break
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            time.sleep(0.01)
        try:
            os.rmdir(self.pids_root)
        except OSError as error:
            print(f"flowmill fork server: cannot remove {self.pids_root}: {error}", file=sys.stderr, flush=True)

    def _mount_own_proc(self) -> None:
        libc = self.libc
        if libc.unshare(CLONE_NEWNS) != 0:
            self.notes.append(f"no private /proc: unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
            return
        # Mounts made outside still show here; none made here shows outside.
        if libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0 or libc.mount(
                b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=ptraceable") != 0:
            self.notes.append(f"no private /proc: mount: {os.strerror(ctypes.get_errno())}")
            return
        self.own_proc = True

    def _drop_capabilities(self) -> None:
        libc = self.libc
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except (OSError, ValueError):
            last = 63
        for cap in range(last + 1):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails without CAP_SETPCAP: nothing to drop then
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        self._capset_none()
        self.capabilities_dropped = _capabilities() == 0

    def _capset_none(self) -> None:
        self.libc.capset(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), (_CapData * 2)())

    def _probe_user_namespace(self) -> bool:
        """Whether a child can have a user namespace of its own in which RLIMIT_NPROC binds."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if self.libc.unshare(CLONE_NEWUSER) == 0:
                    import resource

                    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
                    try:
                        child = os.fork()
                    except BlockingIOError:
                        code = 0  # the limit binds
                    else:
                        if child == 0:
                            os._exit(0)
                        os.waitpid(child, 0)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            self.notes.append("no per-run process limit: RLIMIT_NPROC does not hold in a user namespace here")
            return False
        return True

    def _prepare_rules(self) -> None:
        if not self.abi:
            self.notes.append("no Landlock on this kernel: children can read and write what this user can")
            return
        for path, rights in grants(system_paths(), self.denied):
            try:
                self._rules.append(_PathBeneath(rights & self.handled, os.open(path, os.O_PATH | os.O_CLOEXEC)))
            except OSError:
                continue
        self._rule_refs = tuple(ctypes.byref(rule) for rule in (*self._rules, self._own))

    def ruleset(self, own_folder_fd: int) -> int:
        """A ruleset for one child (-1 without Landlock): the common rules, and everything in
        its own folder. Built by the fork server before the fork; the child restricts itself
        with it once its job has come (see `restrict`)."""
        if not self.abi:
            return -1
        syscall = self._syscall
        fd = syscall(SYS_LANDLOCK_CREATE_RULESET, self._attr_ref, self._attr_size, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
        self._own.parent_fd = own_folder_fd
        for ref in self._rule_refs:
            if syscall(SYS_LANDLOCK_ADD_RULE, fd, LANDLOCK_RULE_PATH_BENEATH, ref, 0) != 0:
                error = ctypes.get_errno()
                os.close(fd)
                raise OSError(error, "landlock_add_rule failed")
        return fd

    # -- in the child ------------------------------------------------------------------------------

    def child_ready(self) -> None:
        """In an idle child, before its job: become the subreaper of what the script starts,
        and (not root) enter a user namespace of its own, where RLIMIT_NPROC counts this run."""
        libc = self.libc
        if self.subreaper:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.user_namespace:
            if libc.unshare(CLONE_NEWUSER) == 0:
                import resource

                resource.setrlimit(resource.RLIMIT_NPROC, self._nproc)
                self._capset_none()  # the new namespace's: nothing to do with them

    def restrict(self, ruleset_fd: int, sys_path: list[str]) -> None:
        """Enter the run's Landlock domain, with read access to its dependency environments
        (`sys_path`) as well. Raises OSError if it cannot: the script must not run then."""
        syscall = self._syscall
        for path in sys_path:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            self._env.parent_fd = fd
            done = syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, self._env_ref, 0)
            os.close(fd)
            if done != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
        if syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        os.close(ruleset_fd)

    def end_run(self) -> bool:
        """At the end of a run, in its child: kill whatever the script left running. True when
        nothing is left: as a subreaper with no child left, nothing of the run remains (the
        common case: one system call); in a signal scope, kill(-1) reaches exactly this run's
        processes. False when the caller must kill its process group after answering, and
        itself with it (the fork server, seeing it die of SIGKILL, sweeps what left the group)."""
        if self.subreaper:
            # Not os.waitpid: the exception it raises when there is no child costs copied pages. With
            # WNOHANG, -1 is ECHILD: no child, so nothing of the run is left.
            if self._waitpid(-1, None, self._flags) < 0:
                return True
            if self.scoped:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return True
        return False

    # -- what it says -------------------------------------------------------------------------------

    def describe(self) -> str:
        """One line: which walls are in force around runs, and which are not."""
        if not self.enabled:
            return "user code is NOT walled off (FLOWMILL_SANDBOX=off): runs can read the data dir and its keys"
        held = []
        if self.abi:
            held.append(f"Landlock ABI {self.abi} (files" + (", signals, abstract sockets)" if self.scoped else ")"))
        if self.capabilities_dropped and os.geteuid() == 0:
            held.append("no capabilities")
        if self.own_proc:
            held.append("/proc hidepid=ptraceable")
        held.append("undumpable fork server")
        if self.user_namespace:
            held.append(f"at most {self.max_processes} processes a run")
        elif self.pids_root is not None:
            held.append(f"at most {self.max_processes} processes a run (a pids cgroup each)")
        if self.max_file_bytes:
            held.append(f"files up to {self.max_file_bytes // (1024 * 1024)} MiB")
        return "runs are walled off: " + ", ".join(held) + "".join(f"; {note}" for note in self.notes)


def _remove_stale_groups(shared: str) -> None:
    """The groups of fork servers that were killed before they could remove them (empty: their
    processes died with them)."""
    for name in os.listdir(shared):
        if name.isdigit() and not _alive(int(name)):
            folder = f"{shared}/{name}"
            for slot in (entry for entry in os.listdir(folder) if entry.isdigit()):
                try:
                    os.rmdir(f"{folder}/{slot}")
                except OSError:
                    pass
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # not /proc: this fork server's own /proc hides other processes
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _capabilities() -> int:
    """This process's permitted capabilities, as a bit mask (0: none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapPrm:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return -1


# -- sweeping what a killed run left ------------------------------------------------------------------


def orphans(proc_fd: int, parent: int, known: set[int]) -> list[int]:
    """Processes whose parent is `parent` (this fork server, their subreaper) and which are
    not in `known` (its own children): what killed runs left behind. Reads /proc through
    `proc_fd` (the system's /proc, opened before any /proc of our own was mounted)."""
    found = []
    for entry in os.listdir(proc_fd):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in known:
            continue
        try:
            fd = os.open(f"{entry}/stat", os.O_RDONLY, dir_fd=proc_fd)
        except OSError:
            continue
        try:
            stat = os.read(fd, 1024)
        except OSError:
            continue
        finally:
            os.close(fd)
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(pid)
    return found
