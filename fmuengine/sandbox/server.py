"""The sandbox that runs untrusted FMUs: a long-lived fork server, one forked child per run.

`runner.py` starts this module once per worker process (`python -m
fmuengine.sandbox <model cache dir>`) with an empty environment, in its own session, and talks
to it over stdin/stdout, one JSON object per line. The server imports numpy and
fmpy once (a fresh interpreter that imports fmpy costs ~100 ms, a small model
simulates in a few ms), then serves one run at a time:

    sandbox server (root, imported fmpy; never loads model code; keeps the last
     │              few FMUs extracted with their parsed modelDescription.xml
     │              on disk, see ModelCache; forks the next run's processes
     │              ahead, see prepare_spare)
     └─ monitor (fork): unshare(mount, net, IPC, UTS, cgroup, PID namespaces),
        │               waits for the model process and reports how it ended
        └─ model process (fork; PID 1 of the new PID namespace):
             private mount tree: a read-only tmpfs root holding read-only binds
             of /usr (+ the /lib /bin symlinks), /etc/ld.so.cache and the Python
             library dirs, a few /dev nodes, a fresh /proc, a small /tmp, and
             the run's own dir at /sandbox, the server's extracted copy of the
             FMU read-only at /model (nothing else: no /etc/passwd, /home,
             /work, /var, other runs; of /root at most the interpreter's library
             dir, if Python lives there); no network (empty net namespace);
             rlimits; no_new_privs; setgroups([]) and a uid/gid of its own slot;
             a seccomp filter; then load and simulate the FMU (extracting it
             first if the server has no copy), write result.npy. Everything
             the model prints or logs goes to fmu.log.

The model's process is the init of its PID namespace, so SIGKILL to it (on
timeout or cancel) makes the kernel kill every process the model made. The
monitor's report (exit status and rusage from wait4) is trusted because no model
code runs in it; the model process's own messages (progress lines, error.json)
are not: the runner decides success from the exit status plus validating
result.npy, and uses the child's words only to label a failure.

Why not bubblewrap? `bwrap --unshare-all` per run would mean exec'ing a fresh
interpreter per run (~100 ms with fmpy), which the speed target forbids. Wrapping
the long-lived server in bwrap instead does not help either: the server must
keep CAP_SYS_ADMIN and CAP_SETUID to build each run's namespaces and switch to
the run's uid, so bwrap would have to run it as root with all capabilities kept,
which isolates nothing that the per-run namespaces do not already isolate, and
it adds a runtime dependency. The per-run steps here are the ones bwrap performs
(unshare, private bind-mounted root, pivot_root, no_new_privs, seccomp), done in
the forked child with ctypes at a cost of a few milliseconds.

Isolation levels (probed once at start, reported in the "ready" event):
- root with CAP_SYS_ADMIN: namespaces+setuid+seccomp+rlimits (production);
- not root, kernel allows user namespaces: user-namespaces+seccomp+rlimits
  (same namespaces; the model runs as the caller's uid mapped to 65534);
- root without namespaces (e.g. a container without CAP_SYS_ADMIN):
  setuid+seccomp+rlimits (the model sees the host's files as an unprivileged
  user and has the network; what it leaves running is killed by uid);
- otherwise seccomp+rlimits (or rlimits-only): a developer fallback only (the
  model runs as the caller's user and could signal its processes).

Protocol (runner -> server):
  {"op": "run", "run_id", "run_dir", "root_dir", "uid", "gid", "limits": {...},
   "model_key"}                                  sha256 of model.fmu (optional)
  {"op": "cancel", "run_id"}
Server -> runner:
  {"event": "ready", "isolation", "pid"}
  {"event": "started", "run_id", "pid"}          pid of the model process
  {"event": "progress", "run_id", "value"}       0..1, at most ~5 a second
  {"event": "finished", "run_id", "exit_kind", "exit_value", "cpu_seconds",
   "max_rss_bytes", "killed_by", "setup_error", "wall_seconds", "model_cache"}
                                                 model_cache: hit, miss (extracted now),
                                                 off, bad_key or unprepared
  {"event": "error", "run_id", "message"}        the run could not be started
The model process reads its simulation parameters from `params.json` in its run
dir (written by the runner; they can be large) and writes `fmu.log`,
`result.npy` and, when it fails cleanly, `error.json` there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import hashlib
import importlib
import io
import json
import os
import platform
import re
import resource
import select
import selectors
import shutil
import signal
import sys
import time
import traceback
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

# File names inside a run's dir (shared with runner.py).
MODEL_FILE = "model.fmu"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.npy"
LOG_FILE = "fmu.log"
ERROR_FILE = "error.json"
EXTRACT_DIR = "fmu"
SANDBOX_MOUNT_POINT = "/sandbox"
# Where a model the server has already extracted is mounted, read-only.
MODEL_MOUNT_POINT = "/model"

# Exit code of the model process when it reports a clean failure in error.json.
REPORTED_FAILURE_EXIT_CODE = 113
# Exit code of the model process when the trusted setup before loading the model failed.
SETUP_FAILED_EXIT_CODE = 114

# Imported by the server before serving, so every run's fork already has them.
PRELOADED_MODULES = (
    "numpy",
    "zipfile",
    "encodings.cp437",
    "lxml.etree",
    "fmpy.fmi1",
    "fmpy.fmi2",
    "fmpy.fmi3",
    "fmpy.model_description",
    "fmpy.simulation",
    "fmpy.sundials",
    "fmpy.validation",
)
OPEN_FILES_LIMIT = 256
PROGRESS_WRITE_INTERVAL = 0.1
PROGRESS_RELAY_INTERVAL = 0.2
KILL_GRACE_SECONDS = 2.0
MAX_COMMAND_LINE_BYTES = 1 << 20
# Extracted FMUs (and their parsed modelDescription.xml) each server keeps for the
# next run of the same file (ModelCache). Larger FMUs are extracted by their run.
MODEL_CACHE_ENTRIES = 8
MODEL_CACHE_MAX_DESCRIPTION_BYTES = 4 << 20
MODEL_CACHE_MAX_UNCOMPRESSED_BYTES = 512 << 20
# Disk per server: the least recently run models go first beyond this.
MODEL_CACHE_MAX_TOTAL_BYTES = 1 << 30
MODEL_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
RUN_NAMESPACES = (
    CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWCGROUP
)
ANY_NAMESPACE = RUN_NAMESPACES | CLONE_NEWUSER | CLONE_NEWTIME

# Mount flags (linux/mount.h); the ST_* bits of statvfs have the same values.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
# Flags a bind remount must keep (the kernel locks them in user namespaces).
PRESERVED_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SYSCALL_NUMBERS = {"x86_64": {"pivot_root": 155}, "aarch64": {"pivot_root": 41}}

# What the model sees of the host, besides /sandbox, /proc, /tmp and /dev.
SYSTEM_DIRS = ("/usr",)
SYSTEM_LINKS_OR_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICE_NODES = ("null", "zero", "full", "random", "urandom")

ISOLATION_NAMESPACES = "namespaces"
ISOLATION_USER_NAMESPACES = "user-namespaces"
ISOLATION_SETUID = "setuid"
ISOLATION_NONE = "none"

_libc = ctypes.CDLL(None, use_errno=True)


def _raise_errno(what: str) -> NoReturn:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def _encode(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        _raise_errno("unshare")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    result = _libc.mount(
        _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)
    )
    if result != 0:
        _raise_errno(f"mount {target}")


def pivot_root_here() -> None:
    """Make the cwd (a mount point) the root and detach the old root stacked under it."""
    number = SYSCALL_NUMBERS.get(platform.machine(), {}).get("pivot_root")
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {platform.machine()}")
    if _libc.syscall(ctypes.c_long(number), b".", b".") != 0:
        _raise_errno("pivot_root")
    if _libc.umount2(b".", ctypes.c_int(MNT_DETACH)) != 0:
        _raise_errno("umount old root")


def prctl(option: int, argument: int = 0) -> None:
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(argument), zero, zero, zero) != 0:
        _raise_errno(f"prctl({option})")


class _CapabilityHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapabilityData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_all_capabilities() -> None:
    """Clear effective, permitted and inheritable capabilities (user-namespace mode)."""
    header = _CapabilityHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapabilityData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        _raise_errno("capset")


# ---- seccomp ---------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
AF_UNIX = 1
# Syscalls a model never needs and that widen the kernel's attack surface (x86_64 numbers).
DENIED_SYSCALLS_X86_64 = (
    101,  # ptrace
    103,  # syslog
    134,  # uselib
    155,  # pivot_root
    159,  # adjtimex
    161,  # chroot
    163,  # acct
    164,  # settimeofday
    165,  # mount
    166,  # umount2
    167,  # swapon
    168,  # swapoff
    169,  # reboot
    172,  # iopl
    173,  # ioperm
    175,  # init_module
    176,  # delete_module
    179,  # quotactl
    212,  # lookup_dcookie
    227,  # clock_settime
    246,  # kexec_load
    248,  # add_key
    249,  # request_key
    250,  # keyctl
    272,  # unshare
    298,  # perf_event_open
    303,  # name_to_handle_at
    304,  # open_by_handle_at
    305,  # clock_adjtime
    308,  # setns
    310,  # process_vm_readv
    311,  # process_vm_writev
    313,  # finit_module
    320,  # kexec_file_load
    321,  # bpf
    323,  # userfaultfd
    425,  # io_uring_setup
    426,  # io_uring_enter
    427,  # io_uring_register
    428,  # open_tree
    429,  # move_mount
    430,  # fsopen
    431,  # fsconfig
    432,  # fsmount
    433,  # fspick
    442,  # mount_setattr
)
SYSCALL_SOCKET = 41
SYSCALL_CLONE = 56
SYSCALL_CLONE3 = 435


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _seccomp_program_x86_64() -> list[tuple[int, int, int, int]]:
    """A denylist: other architectures' ABIs are killed, listed syscalls get EPERM,
    sockets other than AF_UNIX get EPERM (there is no network anyway), clone with
    namespace flags gets EPERM and clone3 ENOSYS (so libc falls back to clone)."""
    load_word, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    deny, no_such_call = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    # Instructions with symbolic jump targets, resolved below.
    code: list[tuple[int, Any, Any, int]] = [
        (load_word, 0, 0, 4),  # arch
        (jump_eq, 0, "kill", AUDIT_ARCH_X86_64),
        (load_word, 0, 0, 0),  # syscall number
        (jump_ge, "deny", 0, X32_SYSCALL_BIT),
        *((jump_eq, "deny", 0, number) for number in DENIED_SYSCALLS_X86_64),
        (jump_eq, "socket", 0, SYSCALL_SOCKET),
        (jump_eq, "clone", 0, SYSCALL_CLONE),
        (jump_eq, "enosys", 0, SYSCALL_CLONE3),
        (ret, 0, 0, allow),
        # BPF jumps only forward, so each check below ends in its own "allow".
        ("label", "socket", None, 0),
        (load_word, 0, 0, 16),  # args[0], low 32 bits: the address family
        (jump_eq, 0, "deny", AF_UNIX),
        (ret, 0, 0, allow),
        ("label", "clone", None, 0),
        (load_word, 0, 0, 16),  # args[0]: the clone flags
        (jump_set, "deny", 0, ANY_NAMESPACE),
        (ret, 0, 0, allow),
        ("label", "deny", None, 0),
        (ret, 0, 0, deny),
        ("label", "enosys", None, 0),
        (ret, 0, 0, no_such_call),
        ("label", "kill", None, 0),
        (ret, 0, 0, kill),
    ]
    labels: dict[str, int] = {}
    instructions: list[tuple[int, Any, Any, int]] = []
    for entry in code:
        if entry[0] == "label":
            labels[entry[1]] = len(instructions)
        else:
            instructions.append(entry)

    def offset(target: Any, index: int) -> int:
        return labels[target] - index - 1 if isinstance(target, str) else target

    return [
        (op, offset(jt, index), offset(jf, index), k)
        for index, (op, jt, jf, k) in enumerate(instructions)
    ]


def install_seccomp_filter() -> bool:
    """Install the filter (no_new_privs must be set); False where it is not implemented."""
    if platform.machine() != "x86_64":
        return False
    program = _seccomp_program_x86_64()
    filters = (_SockFilter * len(program))(*(_SockFilter(*line) for line in program))
    fprog = _SockFprog(len(program), filters)
    zero = ctypes.c_ulong(0)
    mode = ctypes.c_ulong(SECCOMP_MODE_FILTER)
    if _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), mode, ctypes.byref(fprog), zero, zero) != 0:
        _raise_errno("seccomp")
    return True


# ---- the run request --------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """One run as the server receives it; every path is on the host."""

    run_id: str
    run_dir: str  # becomes /sandbox; holds model.fmu and params.json
    root_dir: str  # empty dir the private root tmpfs is mounted on
    uid: int
    gid: int
    cpu_seconds: float
    memory_bytes: int
    file_size_bytes: int
    max_processes: int
    wall_timeout_seconds: float
    model_key: str | None = None  # sha256 of model.fmu, if the runner knows it

    @classmethod
    def from_command(cls, command: dict[str, Any]) -> RunRequest:
        limits = command["limits"]
        return cls(
            run_id=str(command["run_id"]),
            run_dir=str(command["run_dir"]),
            root_dir=str(command["root_dir"]),
            uid=int(command["uid"]),
            gid=int(command["gid"]),
            cpu_seconds=float(limits["cpu_seconds"]),
            memory_bytes=int(limits["memory_bytes"]),
            file_size_bytes=int(limits["file_size_bytes"]),
            max_processes=int(limits["max_processes"]),
            wall_timeout_seconds=float(limits["wall_timeout_seconds"]),
            model_key=str(command["model_key"]) if command.get("model_key") else None,
        )


# ---- extracted models, kept for the next run -----------------------------------------


@dataclass(frozen=True)
class PreparedModel:
    """An FMU extracted on the host, with its parsed description pickled beside it:

        <directory>/fmu/               the archive's files (read-only for runs)
        <directory>/description.pickle fmpy's ModelDescription of it

    The directory is mounted read-only at MODEL_MOUNT_POINT in the run."""

    directory: str

    FILES = "fmu"
    DESCRIPTION = "description.pickle"


def _bytes_under(directory: str) -> int:
    return sum(
        os.lstat(os.path.join(parent, name)).st_size
        for parent, _directories, names in os.walk(directory)
        for name in names
    )


def _sha256_of_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _prepare_model(fmu_path: str, target: str) -> None:
    """Check, extract and parse the FMU into `target` (see PreparedModel). Trusted code
    on data that passed the upload's checks; runs in a forked child of the server, so
    that nothing of any model stays in the server's memory for later runs to inherit."""
    import pickle

    from fmpy.model_description import read_model_description

    from fmuengine.inspection import FMULimits, inspect_fmu

    limits = FMULimits(
        max_model_description_bytes=MODEL_CACHE_MAX_DESCRIPTION_BYTES,
        max_uncompressed_bytes=MODEL_CACHE_MAX_UNCOMPRESSED_BYTES,
    )
    inspect_fmu(Path(fmu_path), limits=limits)
    files = os.path.join(target, PreparedModel.FILES)
    with zipfile.ZipFile(fmu_path) as archive:
        archive.extractall(files)  # names are sanitised, and inspect_fmu refused ".."
    for parent, directories, names in os.walk(target):
        for name in directories:
            # Readable by the runs' uids; the mount is read-only.
            os.chmod(os.path.join(parent, name), 0o755)  # noqa: S103
        for name in names:
            os.chmod(os.path.join(parent, name), 0o644)
    description = read_model_description(files, validate=True)
    with open(os.path.join(target, PreparedModel.DESCRIPTION), "wb") as pickled:
        pickle.dump(description, pickled, protocol=pickle.HIGHEST_PROTOCOL)
    os.chmod(os.path.join(target, PreparedModel.DESCRIPTION), 0o644)


def _load_prepared_description(prepared: PreparedModel) -> Any:
    """In the run, before model code: the pickle was written by _prepare_model, as root,
    and is read-only to the run, so it is trusted data."""
    import pickle

    path = os.path.join(MODEL_MOUNT_POINT, PreparedModel.DESCRIPTION)
    with open(path, "rb") as pickled:
        return pickle.load(pickled)  # noqa: S301


class ModelCache:
    """The last few FMUs this server ran, extracted, with their descriptions parsed.

    Extracting and parsing cost more than simulating a small model, and repeated runs
    of one model (a parameter sweep) are the common case. Only trusted code touches
    the archive here, after the checks an upload passes (zip-slip, size, ratio, no DTD
    or entities), in a child forked for it; the server itself keeps nothing but keys
    and paths, so a run (which inherits the server's memory) learns nothing about
    other models. A run sees only its own model's copy, read-only, so nothing a model
    does can change what the next run of the same file (perhaps another account's)
    gets. When anything here fails, the run extracts and parses the FMU itself, as
    before, and reports what is wrong with it.

    Each server owns one directory under `root`, locked while it lives; directories
    of servers that died without cleaning up are removed by the next server to start.
    """

    def __init__(self, root: str | None) -> None:
        self.entries: OrderedDict[str, PreparedModel] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.directory: str | None = None
        self._lock_fd = -1
        if root:
            self._create_directory(root)

    def _create_directory(self, root: str) -> None:
        os.makedirs(root, mode=0o700, exist_ok=True)
        for name in os.listdir(root):
            self._remove_if_abandoned(os.path.join(root, name))
        directory = os.path.join(root, f"server-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(directory, 0o700)
        self._lock_fd = os.open(os.path.join(directory, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.directory = directory

    @staticmethod
    def _remove_if_abandoned(directory: str) -> None:
        try:
            fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its server is alive
        finally:
            os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)

    def get(self, key: str | None, fmu_path: str) -> tuple[PreparedModel | None, str]:
        """The prepared model and "hit" or "miss", or (None, why not)."""
        if self.directory is None or key is None:
            return None, "off"
        if not MODEL_KEY_PATTERN.fullmatch(key):
            return None, "bad_key"
        try:
            # Cheap next to extracting, and what runs is then always the file given.
            if _sha256_of_file(fmu_path) != key:
                return None, "unprepared"
        except OSError:
            return None, "unprepared"
        prepared = self.entries.get(key)
        if prepared is not None:
            self.entries.move_to_end(key)
            return prepared, "hit"
        prepared = self._prepare_in_child(key, fmu_path)
        if prepared is None:
            return None, "unprepared"
        size = _bytes_under(prepared.directory)
        while self.entries and (
            len(self.entries) >= MODEL_CACHE_ENTRIES
            or sum(self.sizes.values()) + size > MODEL_CACHE_MAX_TOTAL_BYTES
        ):
            evicted_key, evicted = self.entries.popitem(last=False)
            del self.sizes[evicted_key]
            shutil.rmtree(evicted.directory, ignore_errors=True)
        self.entries[key] = prepared
        self.sizes[key] = size
        return prepared, "miss"

    def _prepare_in_child(self, key: str, fmu_path: str) -> PreparedModel | None:
        assert self.directory is not None
        preparing = os.path.join(self.directory, f"{key}.preparing")
        shutil.rmtree(preparing, ignore_errors=True)
        os.mkdir(preparing, 0o755)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                null_fd = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # 1 is the pipe to the runner: nothing may land there
                    os.dup2(null_fd, fd)
                _prepare_model(fmu_path, preparing)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            shutil.rmtree(preparing, ignore_errors=True)
            return None
        directory = os.path.join(self.directory, key)
        os.rename(preparing, directory)
        return PreparedModel(directory=directory)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            os.close(self._lock_fd)
            self.directory = None


# ---- isolation probe ----------------------------------------------------------


def _write_user_namespace_maps(outer_uid: int, outer_gid: int) -> None:
    """Map the caller's uid/gid to 65534 inside the user namespace just unshared."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"65534 {outer_uid} 1")
    Path("/proc/self/gid_map").write_text(f"65534 {outer_gid} 1")


def _probe_in_child(attempt: Any) -> bool:
    """Run `attempt` in a forked child (it may change namespaces); True if it succeeded."""
    pid = os.fork()
    if pid == 0:
        try:
            attempt()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _probe_namespaces() -> None:
    unshare(RUN_NAMESPACES)
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def _probe_user_namespaces() -> None:
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | RUN_NAMESPACES)
    _write_user_namespace_maps(uid, gid)
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def _probe_setuid() -> None:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)


def _probe_seccomp() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if not install_seccomp_filter():
        raise OSError(errno.ENOSYS, "no seccomp filter for this architecture")


def probe_isolation() -> str:
    """Find the strongest isolation mode this process can set up for its runs."""
    if os.geteuid() == 0 and _probe_in_child(_probe_namespaces):
        return ISOLATION_NAMESPACES
    if os.geteuid() != 0 and _probe_in_child(_probe_user_namespaces):
        return ISOLATION_USER_NAMESPACES
    if os.geteuid() == 0 and _probe_in_child(_probe_setuid):
        return ISOLATION_SETUID
    return ISOLATION_NONE


def describe_isolation(mode: str, seccomp: bool) -> str:
    parts = {
        ISOLATION_NAMESPACES: ["namespaces", "setuid"],
        ISOLATION_USER_NAMESPACES: ["user-namespaces"],
        ISOLATION_SETUID: ["setuid"],
        ISOLATION_NONE: [],
    }[mode]
    if seccomp:
        parts.append("seccomp")
    return "+".join([*parts, "rlimits"]) if parts else "rlimits-only"


def python_library_dirs() -> list[str]:
    """Dirs on sys.path the model process may need to read (lazy imports, fmpy's XML
    schemas), except the project itself, its ancestors, and what /usr already covers."""
    project_root = Path(__file__).resolve().parent.parent
    found: list[Path] = []
    for entry in sys.path:
        if not entry:
            continue
        path = Path(entry).resolve()
        if not path.is_dir() or path == project_root or path in project_root.parents:
            continue
        if path.is_relative_to("/usr") or path == Path("/"):
            continue
        found.append(path)
    kept: list[str] = []
    for path in sorted(set(found), key=lambda candidate: len(candidate.parts)):
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(str(path))
    return kept


# ---- the model process (PID 1 of the run's PID namespace) -------------------------


def _bind(source: str, target: str, *, writable: bool, devices: bool = False) -> None:
    mount(source, target, None, MS_BIND, None)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (os.statvfs(source).f_flag & PRESERVED_MOUNT_FLAGS)
    flags |= MS_NOEXEC if devices else MS_NODEV
    if not writable:
        flags |= MS_RDONLY
    mount(None, target, None, flags, None)


def _make_mount_point(path: str, *, is_file: bool) -> None:
    if is_file:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    else:
        os.makedirs(path, exist_ok=True)


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _tmp_size(file_size_bytes: int) -> str:
    return f"size={max(1 << 20, min(file_size_bytes, 64 << 20))}"


def _build_private_root(root: str, library_dirs: list[str], *, in_user_namespace: bool) -> None:
    """The part of a run's file system view that is the same for every run: a tmpfs
    root with read-only binds of what a model needs, /dev nodes, /proc and /tmp.
    Runs as root of the run's mount namespace, on any empty dir of the host."""

    def inside(path: str) -> str:
        return _inside(root, path)

    mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")

    # The model's own /tmp, mounted before the library dirs, which may lie under /tmp;
    # sized for the run when it is known (_finish_private_root).
    private_tmp = inside("/tmp")  # noqa: S108
    os.makedirs(private_tmp)
    mount("tmpfs", private_tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"{_tmp_size(64 << 20)},mode=1777")

    for directory in SYSTEM_DIRS:
        _make_mount_point(inside(directory), is_file=False)
        _bind(directory, inside(directory), writable=False)
    for name in SYSTEM_LINKS_OR_DIRS:
        if os.path.islink(name):
            os.symlink(os.readlink(name), inside(name))
        elif os.path.isdir(name):
            _make_mount_point(inside(name), is_file=False)
            _bind(name, inside(name), writable=False)
    for file in SYSTEM_FILES:
        if os.path.isfile(file):
            _make_mount_point(inside(file), is_file=True)
            _bind(file, inside(file), writable=False)
    for directory in library_dirs:
        _make_mount_point(inside(directory), is_file=False)
        _bind(directory, inside(directory), writable=False)

    os.makedirs(inside("/dev"))
    for node in DEVICE_NODES:
        _make_mount_point(inside(f"/dev/{node}"), is_file=True)
        _bind(f"/dev/{node}", inside(f"/dev/{node}"), writable=True, devices=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, inside(f"/dev/{name}"))
    for number, name in ((1, "stdout"), (2, "stderr")):
        os.symlink(f"/proc/self/fd/{number}", inside(f"/dev/{name}"))

    os.makedirs(inside("/proc"))
    try:
        mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError:
        # Unprivileged proc mounts fail when the host's /proc is partly masked; the
        # model then simply has no /proc. As root this must work.
        if not in_user_namespace:
            raise


def _finish_private_root(root: str, request: RunRequest, prepared: PreparedModel | None) -> None:
    """Add the run's own dirs to the view _build_private_root made, make it read-only
    and pivot into it."""

    def inside(path: str) -> str:
        return _inside(root, path)

    mount(
        None,
        inside("/tmp"),  # noqa: S108
        None,
        MS_REMOUNT | MS_NOSUID | MS_NODEV,
        f"{_tmp_size(request.file_size_bytes)},mode=1777",
    )
    _make_mount_point(inside(SANDBOX_MOUNT_POINT), is_file=False)
    _bind(request.run_dir, inside(SANDBOX_MOUNT_POINT), writable=True)
    if prepared is not None:
        _make_mount_point(inside(MODEL_MOUNT_POINT), is_file=False)
        _bind(prepared.directory, inside(MODEL_MOUNT_POINT), writable=False)

    mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chdir(root)
    pivot_root_here()
    os.chdir(SANDBOX_MOUNT_POINT)


def _apply_limits(request: RunRequest) -> None:
    cpu = max(1, int(request.cpu_seconds + 0.999))
    # Soft limit: SIGXCPU; the hard limit one second later is a SIGKILL nobody can ignore.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (request.memory_bytes, request.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (request.file_size_bytes, request.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (request.max_processes, request.max_processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))


def _arrange_descriptors(log_fd: int, keep: list[int]) -> list[int]:
    """Point 0 at /dev/null and 1, 2 at the log; move `keep` to 3, 4, ...; close every
    other descriptor (the server's pipes to the runner above all)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in [log_fd, *keep]]
    null_fd = os.open("/dev/null", os.O_RDWR)
    os.dup2(null_fd, 0)
    os.dup2(high[0], 1)
    os.dup2(high[0], 2)
    arranged = []
    for position, fd in enumerate(high[1:], start=3):
        os.dup2(fd, position)
        arranged.append(position)
    os.closerange(3 + len(arranged), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    # The server's Python-level stdout is the runner pipe; the model's is the log.
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=True, errors="replace"
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True, errors="replace"
    )
    return arranged


def _read_assigned_run(request_fd: int) -> tuple[RunRequest, PreparedModel | None]:
    """A spare waits here for its run (one JSON line from the server); the server
    closing the pipe instead means it is not needed."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(request_fd, 65536)
        if not chunk:
            os._exit(0)
        data += chunk
    os.close(request_fd)
    command = json.loads(data)
    prepared_dir = command.get("prepared_dir")
    return RunRequest.from_command(command), PreparedModel(prepared_dir) if prepared_dir else None


@dataclass(frozen=True)
class RunSetup:
    """What a forked run's processes get from the server: how to isolate the run, and
    the run itself unless they are a spare, which learns it later."""

    mode: str
    library_dirs: list[str]
    request: RunRequest | None = None
    prepared: PreparedModel | None = None
    spare_root: str | None = None  # an empty host dir a spare builds its root on


def _prepare_model_process(
    setup: RunSetup, fds: dict[str, int]
) -> tuple[PreparedModel | None, dict[str, Any], int]:
    """The trusted part of the model process: sandbox itself, read the parameters.
    A spare does what is the same for every run first, then waits for its run.
    Returns the run's prepared model, its parameters and the progress descriptor."""
    request, prepared, mode = setup.request, setup.prepared, setup.mode
    os.setsid()  # own process group: the model cannot signal the server's group
    os.umask(0o022)
    namespaces = mode in (ISOLATION_NAMESPACES, ISOLATION_USER_NAMESPACES)
    in_user_namespace = mode == ISOLATION_USER_NAMESPACES
    if request is None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # while it waits, as root
        assert setup.spare_root is not None
        root = setup.spare_root
        _build_private_root(root, setup.library_dirs, in_user_namespace=in_user_namespace)
        request, prepared = _read_assigned_run(fds.pop("request_r"))
    else:
        root = request.root_dir
        if namespaces:
            _build_private_root(root, setup.library_dirs, in_user_namespace=in_user_namespace)
    log_fd = os.open(
        os.path.join(request.run_dir, LOG_FILE),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
        0o644,
    )
    progress_fd, setup_fd, lifeline_fd = _arrange_descriptors(
        log_fd, [fds["progress_w"], fds["setup_w"], fds["lifeline_r"]]
    )
    fds.update(progress_w=progress_fd, setup_w=setup_fd, lifeline_r=lifeline_fd)
    os.set_blocking(progress_fd, False)

    if namespaces:
        _finish_private_root(root, request, prepared)
        if mode == ISOLATION_NAMESPACES:
            # The model's files stay private to its uid.
            os.chown(".", request.uid, request.gid)
            os.chmod(".", 0o700)
        _libc.sethostname(b"sandbox", ctypes.c_size_t(7))
    else:
        os.chdir(request.run_dir)
        if mode == ISOLATION_SETUID:
            os.chown(".", request.uid, request.gid)
            os.chmod(".", 0o700)

    params = json.loads(Path(PARAMS_FILE).read_text())
    _apply_limits(request)

    if mode in (ISOLATION_NAMESPACES, ISOLATION_SETUID):
        os.setgroups([])
        os.setresgid(request.gid, request.gid, request.gid)
        os.setresuid(request.uid, request.uid, request.uid)  # clears all capabilities
    elif mode == ISOLATION_USER_NAMESPACES:
        drop_all_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    # Set after the uid change, which clears it. If the monitor died before this,
    # its end of the lifeline pipe is closed and the pipe reads as ready (EOF).
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    readable, _, _ = select.select([lifeline_fd], [], [], 0)
    if readable:
        os._exit(SETUP_FAILED_EXIT_CODE)
    try:
        install_seccomp_filter()
    except OSError:
        if mode == ISOLATION_NAMESPACES:
            raise
    os.environ.clear()
    os.close(lifeline_fd)
    return prepared, params, progress_fd


def _run_model_process(setup: RunSetup, fds: dict[str, int]) -> NoReturn:
    try:
        prepared, params, progress_fd = _prepare_model_process(setup, fds)
        os.write(fds["setup_w"], b"ok")
        os.close(fds["setup_w"])
    except BaseException as error:
        try:
            os.write(fds["setup_w"], f"{type(error).__name__}: {error}"[:2000].encode())
        finally:
            os._exit(SETUP_FAILED_EXIT_CODE)
    # From here on model code runs in this process: nothing it says is trusted.
    try:
        code = simulate_in_sandbox(params, progress_fd, prepared)
    except BaseException:
        traceback.print_exc()
        code = REPORTED_FAILURE_EXIT_CODE
    os._exit(code)


# ---- simulation (inside the sandbox) ----------------------------------------------

FMI_STATUS_LABELS = ("ok", "warning", "discard", "error", "fatal", "pending")


def _report_failure(code: str, message: str) -> int:
    print(f"[sandbox] {message}", file=sys.stderr)
    with open(ERROR_FILE, "w") as error_file:
        json.dump({"code": code, "message": message}, error_file)
    return REPORTED_FAILURE_EXIT_CODE


def _near_memory_limit() -> bool:
    """True when the peak address space came within 128 MB of RLIMIT_AS."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024 >= limit - (128 << 20)
    except (OSError, ValueError):
        pass
    return False


def _numpy_type_for(variable_type: str) -> str:
    if variable_type == "Boolean":
        return "?"
    if variable_type in ("Integer", "Enumeration") or "Int" in variable_type:
        return "<i4"
    return "<f8"


def simulate_in_sandbox(
    params: dict[str, Any], progress_fd: int, prepared: PreparedModel | None = None
) -> int:
    """Simulate the FMU (the server's prepared copy, or model.fmu in the cwd, extracted
    and checked here); write result.npy. Returns the exit code for the model process."""
    import fmpy
    import numpy as np
    from fmpy.fmi1 import FMICallException
    from fmpy.model_description import read_model_description

    try:
        if prepared is not None:
            unzip_dir = os.path.join(MODEL_MOUNT_POINT, PreparedModel.FILES)
            model_description = _load_prepared_description(prepared)
        else:
            unzip_dir = os.path.abspath(EXTRACT_DIR)
            fmpy.extract(MODEL_FILE, unzipdir=unzip_dir)
            model_description = read_model_description(unzip_dir, validate=True)
    except MemoryError:
        return _report_failure(
            "out_of_memory", "The FMU could not be read within the memory limit."
        )
    except Exception as error:
        return _report_failure("invalid_fmu", f"The FMU could not be read: {error}")

    variables = {variable.name: variable for variable in model_description.modelVariables}
    start_values = params.get("start_values") or {}
    output = params.get("output") or None
    input_table = params.get("input") or None
    input_names = list(input_table["columns"][1:]) if input_table else []
    unknown = [
        name for name in [*start_values, *(output or []), *input_names] if name not in variables
    ]
    if unknown:
        return _report_failure(
            "invalid_parameters", f"Unknown variable(s): {', '.join(unknown[:10])}."
        )
    fmi_type = params.get("fmi_type")
    if fmi_type == "ModelExchange" and model_description.modelExchange is None:
        return _report_failure("invalid_parameters", "The model does not support ModelExchange.")
    if fmi_type == "CoSimulation" and model_description.coSimulation is None:
        return _report_failure("invalid_parameters", "The model does not support CoSimulation.")

    input_signals = None
    if input_table:
        dtype = [("time", "<f8")] + [
            (name, _numpy_type_for(variables[name].type)) for name in input_names
        ]
        try:
            input_signals = np.array([tuple(row) for row in input_table["rows"]], dtype=dtype)
        except (TypeError, ValueError) as error:
            return _report_failure("invalid_parameters", f"The input table is not valid: {error}")

    experiment = model_description.defaultExperiment
    start_time = params.get("start_time")
    if start_time is None:
        start_time = experiment.startTime if experiment and experiment.startTime is not None else 0
    stop_time = params.get("stop_time")
    if stop_time is None:
        has_stop = experiment is not None and experiment.stopTime is not None
        stop_time = experiment.stopTime if has_stop else float(start_time) + 1
    span = float(stop_time) - float(start_time)
    last_report = 0.0

    def step_finished(simulated_time: float, recorder: Any) -> bool:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_WRITE_INTERVAL:
            last_report = now
            fraction = (simulated_time - float(start_time)) / span if span > 0 else 1.0
            # Best effort: the server may read slowly (the pipe is non-blocking) or be gone.
            with contextlib.suppress(OSError):
                os.write(progress_fd, b"%.6f\n" % fraction)
        return True

    keyword_arguments = {
        name: params[name]
        for name in (
            "start_time",
            "stop_time",
            "output_interval",
            "step_size",
            "relative_tolerance",
            "fmi_type",
            "solver",
        )
        if params.get(name) is not None
    }
    try:
        result = fmpy.simulate_fmu(
            unzip_dir,
            model_description=model_description,
            start_values=start_values,
            input=input_signals,
            output=output,
            step_finished=step_finished,
            **keyword_arguments,
        )
        np.save(RESULT_FILE, np.asarray(result), allow_pickle=False)
    except MemoryError:
        return _report_failure("out_of_memory", "The model ran out of memory.")
    except FMICallException as error:
        label = FMI_STATUS_LABELS[error.status] if error.status in range(6) else str(error.status)
        if _near_memory_limit():
            return _report_failure(
                "out_of_memory", f"The model ran out of memory ({error.function} returned {label})."
            )
        return _report_failure(
            "model_error", f"The model returned status {label} from {error.function}."
        )
    except OSError as error:
        if error.errno == errno.EFBIG:
            return _report_failure("file_size_exceeded", "The run exceeded its file size limit.")
        return _report_failure("model_error", f"The simulation failed: {error}")
    except Exception as error:
        if _near_memory_limit():
            return _report_failure("out_of_memory", f"The model ran out of memory: {error}")
        return _report_failure("model_error", f"The simulation failed: {error}")
    return 0


# ---- the monitor (between the server and the model process) -----------------------


def _write_line(fd: int, message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _close_descriptors_except(keep: set[int]) -> None:
    first = 3
    for fd in sorted(keep):
        if fd >= first:
            os.closerange(first, fd)
            first = fd + 1
    os.closerange(first, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _kill_every_process_of(uid: int, gid: int) -> None:
    """Without a PID namespace, the processes a model left behind are found by their
    uid: a helper takes that uid and signals everything it may signal."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for _ in range(100):  # a fork bomb may still be forking during the first rounds
                os.kill(-1, signal.SIGKILL)
        except OSError:
            pass  # ESRCH: nothing (left) to kill
        os._exit(0)
    os.waitpid(pid, 0)


def _run_monitor(setup: RunSetup, fds: dict[str, int], server_pid: int) -> NoReturn:
    """Create the run's namespaces, fork the model process into them, wait for it and
    report its exit status and resource usage to the server. For a spare (no request,
    namespace modes only) the model process learns its run later."""
    request, mode = setup.request, setup.mode
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != server_pid:
            os._exit(1)
        null_fd = os.open("/dev/null", os.O_RDWR)
        os.dup2(null_fd, 0)
        os.dup2(null_fd, 1)
        os.close(fds.pop("status_r"))
        os.close(fds.pop("progress_r"))
        # Drop the server's other descriptors (its epoll, earlier runs' leftovers).
        _close_descriptors_except({2, *fds.values()})
        if mode == ISOLATION_NAMESPACES:
            unshare(RUN_NAMESPACES)
        elif mode == ISOLATION_USER_NAMESPACES:
            uid, gid = os.geteuid(), os.getegid()
            unshare(CLONE_NEWUSER | RUN_NAMESPACES)
            _write_user_namespace_maps(uid, gid)
        elif mode == ISOLATION_SETUID:
            assert request is not None
            _kill_every_process_of(request.uid, request.gid)  # leftovers of a killed server
        pid = os.fork()
        if pid == 0:
            os.close(fds["status_w"])
            os.close(fds["setup_r"])
            os.close(fds["lifeline_w"])
            _run_model_process(setup, fds)
        for name in ("progress_w", "setup_w", "lifeline_r", "request_r"):
            if name in fds:
                os.close(fds[name])
        _write_line(fds["status_w"], {"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        # With a PID namespace the kernel has killed everything the model started;
        # otherwise end what is left of it here, before the slot is reused.
        if mode == ISOLATION_SETUID:
            assert request is not None
            _kill_every_process_of(request.uid, request.gid)
        elif mode == ISOLATION_NONE:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # its process group (it called setsid)
        os.set_blocking(fds["setup_r"], False)
        try:
            setup = os.read(fds["setup_r"], 4096).decode(errors="replace")
        except BlockingIOError:
            setup = ""
        _write_line(
            fds["status_w"],
            {
                "status": status,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_bytes": usage.ru_maxrss * 1024,
                "setup": setup,
            },
        )
        os._exit(0)
    except BaseException as error:
        try:
            _write_line(fds["status_w"], {"monitor_error": f"{type(error).__name__}: {error}"})
        finally:
            os._exit(1)


# ---- the server ---------------------------------------------------------------------


@dataclass
class RunProcesses:
    """A forked monitor (and its model process) as the server holds them."""

    monitor_pid: int
    status_fd: int
    progress_fd: int
    request_fd: int = -1  # a spare's pipe for its run; -1 once assigned or if none

    def close(self) -> None:
        for fd in (self.status_fd, self.progress_fd, self.request_fd):
            if fd >= 0:
                os.close(fd)


@dataclass
class ActiveRun:
    request: RunRequest
    monitor_pid: int
    status_fd: int
    progress_fd: int
    started_at: float
    deadline: float
    model_pid: int | None = None
    killed_by: str | None = None
    status_buffer: bytes = b""
    progress_buffer: bytes = b""
    last_progress_sent: float = 0.0
    last_progress_value: float = -1.0
    report: dict[str, Any] | None = None
    model_cache: str = "off"


class SandboxServer:
    """Serves run requests from stdin, one run at a time; see the module docstring."""

    def __init__(self, model_cache_root: str | None = None) -> None:
        self.mode = probe_isolation()
        self.seccomp = _probe_in_child(_probe_seccomp)
        self.library_dirs = python_library_dirs()
        self.selector = selectors.DefaultSelector()
        self.command_buffer = b""
        self.run: ActiveRun | None = None
        self.exiting_monitors: list[int] = []
        self.stopping = False
        # Only a private mount tree can show a shared extraction read-only.
        namespaces = self.mode in (ISOLATION_NAMESPACES, ISOLATION_USER_NAMESPACES)
        self.models = ModelCache(model_cache_root if namespaces else None)
        # Spares need a private mount tree too, and an empty host dir to build it on.
        self.spare: RunProcesses | None = None
        self.spare_root: str | None = None
        if self.models.directory is not None:
            self.spare_root = os.path.join(self.models.directory, "spare-root")
            os.mkdir(self.spare_root, 0o700)

    def send(self, message: dict[str, Any], *, droppable: bool = False) -> None:
        """Write one event. stdout is non-blocking so that a runner busy in a callback
        cannot stall the deadline enforcement: droppable events (progress) are then
        skipped; they are shorter than PIPE_BUF, so a pipe write is all or nothing."""
        data = (json.dumps(message) + "\n").encode()
        while data:
            try:
                written = os.write(1, data)
            except BlockingIOError:
                if droppable:
                    return
                select.select([], [1], [], 1.0)
                continue
            except BrokenPipeError:
                self.stopping = True
                return
            data = data[written:]

    def serve(self) -> None:
        os.set_blocking(0, False)
        os.set_blocking(1, False)
        self.selector.register(0, selectors.EVENT_READ, "command")
        self.send(
            {
                "event": "ready",
                "isolation": describe_isolation(self.mode, self.seccomp),
                "pid": os.getpid(),
            }
        )
        while not (self.stopping and self.run is None):
            timeout = 0.05 if self.exiting_monitors else 0.5
            if self.run is not None:
                timeout = max(0.0, min(timeout, self.run.deadline - time.monotonic()))
            for key, _ in self.selector.select(timeout):
                if key.data == "command":
                    self.read_commands()
                elif key.data == "status":
                    self.read_status()
                elif key.data == "progress":
                    self.read_progress()
            self.enforce_deadline()
            self.reap_monitors()
            if self.run is None:
                self.prepare_spare()
        self.discard_spare()

    def reap_monitors(self) -> None:
        for pid in list(self.exiting_monitors):
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped = pid
            if reaped:
                self.exiting_monitors.remove(pid)

    def read_commands(self) -> None:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        if not chunk:
            # The runner is gone: nobody wants this run any more.
            self.selector.unregister(0)
            self.stopping = True
            if self.run is not None:
                self.kill_run("runner_gone")
            return
        self.command_buffer += chunk
        if len(self.command_buffer) > MAX_COMMAND_LINE_BYTES:
            self.command_buffer = b""
        while b"\n" in self.command_buffer:
            line, self.command_buffer = self.command_buffer.split(b"\n", 1)
            if line.strip():
                self.handle_command(line)

    def handle_command(self, line: bytes) -> None:
        try:
            command = json.loads(line)
            operation = command["op"]
        except (ValueError, KeyError, TypeError):
            self.send({"event": "error", "run_id": None, "message": "unreadable command"})
            return
        if operation == "run":
            self.start_run(command)
        elif (
            operation == "cancel" and self.run and self.run.request.run_id == command.get("run_id")
        ):
            self.kill_run("cancelled")

    def start_run(self, command: dict[str, Any]) -> None:
        run_id = command.get("run_id")
        if self.run is not None:
            self.send({"event": "error", "run_id": run_id, "message": "a run is already active"})
            return
        try:
            request = RunRequest.from_command(command)
            if (
                self.mode in (ISOLATION_NAMESPACES, ISOLATION_SETUID)
                and min(request.uid, request.gid) <= 0
            ):
                raise ValueError("the model must not run as root")
        except (KeyError, TypeError, ValueError) as error:
            self.send({"event": "error", "run_id": run_id, "message": f"bad run request: {error}"})
            return
        prepared, model_cache = self.models.get(
            request.model_key, os.path.join(request.run_dir, MODEL_FILE)
        )
        started_at = time.monotonic()
        try:
            if self.spare_root is None:
                processes = self.fork_run_processes(request, prepared)
            else:
                processes = self.take_spare()
                self.assign(processes, {**command, "prepared_dir": prepared and prepared.directory})
        except OSError as error:
            message = f"the run's processes could not start: {error}"
            self.send({"event": "error", "run_id": run_id, "message": message})
            return
        self.run = ActiveRun(
            request=request,
            monitor_pid=processes.monitor_pid,
            status_fd=processes.status_fd,
            progress_fd=processes.progress_fd,
            started_at=started_at,
            deadline=started_at + request.wall_timeout_seconds,
            model_cache=model_cache,
        )
        self.selector.register(processes.status_fd, selectors.EVENT_READ, "status")
        self.selector.register(processes.progress_fd, selectors.EVENT_READ, "progress")

    def fork_run_processes(
        self, request: RunRequest | None, prepared: PreparedModel | None = None
    ) -> RunProcesses:
        """Fork a run's monitor (which forks its model process); with request None, a
        spare that waits for its run on the returned request pipe."""
        pipes = {name: os.pipe() for name in ("status", "progress", "setup", "lifeline")}
        if request is None:
            pipes["request"] = os.pipe()
        fds = {
            f"{name}_{end}": fd
            for name, pair in pipes.items()
            for end, fd in zip("rw", pair, strict=True)
        }
        try:
            monitor_pid = os.fork()
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        if monitor_pid == 0:
            request_w = fds.pop("request_w", None)
            if request_w is not None:
                os.close(request_w)
            setup = RunSetup(
                mode=self.mode,
                library_dirs=self.library_dirs,
                request=request,
                prepared=prepared,
                spare_root=self.spare_root if request is None else None,
            )
            _run_monitor(setup, fds, os.getppid())
        for name in ("status_w", "progress_w", "setup_r", "setup_w", "lifeline_r", "lifeline_w"):
            os.close(fds[name])
        if "request_r" in fds:
            os.close(fds["request_r"])
        os.set_blocking(fds["status_r"], False)
        os.set_blocking(fds["progress_r"], False)
        return RunProcesses(
            monitor_pid=monitor_pid,
            status_fd=fds["status_r"],
            progress_fd=fds["progress_r"],
            request_fd=fds.get("request_w", -1),
        )

    def take_spare(self) -> RunProcesses:
        """The waiting spare if it is still there, else a new one."""
        spare, self.spare = self.spare, None
        if spare is not None:
            try:
                ended, _ = os.waitpid(spare.monitor_pid, os.WNOHANG)
            except ChildProcessError:
                ended = spare.monitor_pid
            if not ended:
                return spare
            spare.close()  # reaped just now
        return self.fork_run_processes(None)

    def assign(self, spare: RunProcesses, assignment: dict[str, Any]) -> None:
        """Hand a spare its run; a spare that cannot take it is ended."""
        try:
            _write_line(spare.request_fd, assignment)  # small: fits the empty pipe
        except OSError:
            self.end_processes(spare)
            raise
        os.close(spare.request_fd)
        spare.request_fd = -1

    def prepare_spare(self) -> None:
        """Fork the next run's processes ahead, so that a run does not wait for its
        forks, namespaces and mounts (each run still gets processes of its own)."""
        if self.spare_root is None or self.spare is not None or self.stopping:
            return
        try:
            self.spare = self.fork_run_processes(None)
        except OSError:
            self.spare = None  # the run forks its own

    def discard_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            self.end_processes(spare)

    def end_processes(self, processes: RunProcesses) -> None:
        """End processes no run uses: a waiting model process reads EOF and exits; its
        monitor is killed and reaped later."""
        processes.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(processes.monitor_pid, signal.SIGKILL)
        self.exiting_monitors.append(processes.monitor_pid)

    def read_status(self) -> None:
        run = self.run
        assert run is not None
        try:
            chunk = os.read(run.status_fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            run.status_buffer += chunk
            while b"\n" in run.status_buffer:
                line, run.status_buffer = run.status_buffer.split(b"\n", 1)
                message = json.loads(line)
                if "pid" in message:
                    run.model_pid = int(message["pid"])
                    self.send(
                        {"event": "started", "run_id": run.request.run_id, "pid": run.model_pid}
                    )
                    if run.killed_by is not None:
                        self.kill_model(run)
                else:
                    # The model process is gone (the monitor reports after wait4):
                    # answer now, reap the exiting monitor later.
                    run.report = message
                    self.finish_run()
                    return
            return
        self.finish_run()

    def read_progress(self) -> None:
        run = self.run
        assert run is not None
        try:
            chunk = os.read(run.progress_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(run.progress_fd)
            os.close(run.progress_fd)
            run.progress_fd = -1
            return
        run.progress_buffer = (run.progress_buffer + chunk)[-4096:]
        lines = run.progress_buffer.split(b"\n")
        run.progress_buffer = lines[-1]
        now = time.monotonic()
        if len(lines) < 2 or now - run.last_progress_sent < PROGRESS_RELAY_INTERVAL:
            return
        try:
            value = float(lines[-2])
        except ValueError:
            return
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            value = min(max(value, 0.0), 1.0) if value == value else 0.0
        if value > run.last_progress_value:
            run.last_progress_sent = now
            run.last_progress_value = value
            progress = {"event": "progress", "run_id": run.request.run_id, "value": value}
            self.send(progress, droppable=True)

    def kill_model(self, run: ActiveRun) -> None:
        target = run.model_pid if run.model_pid is not None else run.monitor_pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)

    def kill_run(self, reason: str) -> None:
        run = self.run
        if run is None or run.killed_by is not None:
            return
        run.killed_by = reason
        # From now on the deadline is for the monitor's report of the kill.
        run.deadline = time.monotonic() + KILL_GRACE_SECONDS
        self.kill_model(run)

    def enforce_deadline(self) -> None:
        run = self.run
        if run is None or time.monotonic() < run.deadline:
            return
        if run.killed_by is None:
            self.kill_run("timeout")
        else:
            # The monitor did not report after its model was killed: end it too.
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.monitor_pid, signal.SIGKILL)
            run.deadline = float("inf")

    def finish_run(self) -> None:
        run = self.run
        assert run is not None
        self.selector.unregister(run.status_fd)
        os.close(run.status_fd)
        if run.progress_fd >= 0:
            self.selector.unregister(run.progress_fd)
            os.close(run.progress_fd)
        report = run.report or {}
        monitor_status = None
        if not report:
            # Pipe closed without a report: the monitor has ended, so this does not block.
            _, monitor_status = os.waitpid(run.monitor_pid, 0)
        else:
            self.exiting_monitors.append(run.monitor_pid)
        event: dict[str, Any] = {
            "event": "finished",
            "run_id": run.request.run_id,
            "exit_kind": "unknown",
            "exit_value": None,
            "cpu_seconds": float(report.get("cpu_seconds", 0.0)),
            "max_rss_bytes": int(report.get("max_rss_bytes", 0)),
            "killed_by": run.killed_by,
            "setup_error": None,
            "wall_seconds": time.monotonic() - run.started_at,
            "model_cache": run.model_cache,
        }
        if "status" in report:
            status = int(report["status"])
            if os.WIFSIGNALED(status):
                event.update(exit_kind="signaled", exit_value=os.WTERMSIG(status))
            else:
                event.update(exit_kind="exited", exit_value=os.WEXITSTATUS(status))
            if report.get("setup") != "ok":
                event["setup_error"] = report.get("setup") or "the sandbox setup did not finish"
        else:
            event["setup_error"] = report.get("monitor_error") or (
                f"the monitor ended without a report (status {monitor_status})"
            )
        self.run = None
        self.send(event)


def main() -> None:
    # Numerical libraries must not start thread pools in a process that forks per run.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    for module in PRELOADED_MODULES:
        importlib.import_module(module)
    # Keep the garbage collector of every forked run off the server's objects: each
    # page it touches would be copied (copy-on-write) and cost time.
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server = SandboxServer(model_cache_root=sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        server.serve()
    finally:
        server.models.close()


if __name__ == "__main__":
    main()
