"""Jail building blocks: namespaces, mounts, the run's private root, rlimits, descriptors.

Everything here is done with ctypes on libc, in a process forked for one run, at a cost
of a few milliseconds (the per-run steps bubblewrap performs: unshare, a private
bind-mounted root, pivot_root, no_new_privs), because exec'ing a fresh interpreter per
run costs ~100 ms with fmpy imported.

The private root (`build_private_root`, at spare time, the same for every run):

    /            read-only tmpfs (1 MiB)
    /usr, /lib…  read-only binds of the host's; /etc/ld.so.cache; Python's library dirs
    /dev         null, zero, full, random, urandom (binds), fd/std* symlinks
    /proc        a fresh proc of the run's PID namespace
    /sandbox     the run's scratch tmpfs (its cwd; writable; sized per run)
    /tmp         another dir of the same scratch tmpfs (so one quota covers both)

and at assignment (`finish_private_root`): /sandbox/model.fmu, a read-only bind of the
run dir's FMU, and /model, a read-only bind of the server's extracted copy of it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import os
import platform
import resource
import sys
from pathlib import Path
from typing import NoReturn

from fmuengine.protocol import MODEL_FILE, MODEL_MOUNT_POINT, SANDBOX_MOUNT_POINT, SandboxLimits

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

PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41}

# What the model sees of the host, besides /sandbox, /proc, /tmp and /dev.
SYSTEM_DIRS = ("/usr",)
SYSTEM_LINKS_OR_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICE_NODES = ("null", "zero", "full", "random", "urandom")

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
    number = PIVOT_ROOT_SYSCALL.get(platform.machine())
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


OPEN_FILES_LIMIT = 256
# Inodes of a run's scratch tmpfs: a bound on directory trees and file counts, whose
# metadata is kernel memory rather than the pages the size option counts.
SCRATCH_INODES = 65536
SCRATCH_SANDBOX = "sandbox"
SCRATCH_TMP = "tmp"


def bind(source: str, target: str, *, writable: bool, devices: bool = False) -> None:
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


def mount_scratch(point: str, size_bytes: int) -> None:
    """The run's writable storage: a tmpfs whose pages are charged to the memory cgroup
    of the process that writes them (the model), so disk and memory caps both hold and
    nothing of the run is left on the host's disk when its mount namespace ends."""
    mount(
        "tmpfs",
        point,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={max(size_bytes, 1 << 20)},nr_inodes={SCRATCH_INODES},mode=0755",
    )
    for name in (SCRATCH_SANDBOX, SCRATCH_TMP):
        os.mkdir(os.path.join(point, name), 0o700)


def resize_scratch(point: str, size_bytes: int) -> None:
    mount(
        None,
        point,
        None,
        MS_REMOUNT | MS_NOSUID | MS_NODEV,
        f"size={max(size_bytes, 1 << 20)},nr_inodes={SCRATCH_INODES}",
    )


def build_private_root(
    root: str, scratch: str, library_dirs: list[str], *, in_user_namespace: bool
) -> None:
    """The part of a run's view that is the same for every run (see the module
    docstring). Runs as root of the run's mount namespace, on an empty host dir."""

    def inside(path: str) -> str:
        return _inside(root, path)

    mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")

    # /sandbox and /tmp first: the library dirs may lie under /tmp.
    for name, point in ((SCRATCH_SANDBOX, SANDBOX_MOUNT_POINT), (SCRATCH_TMP, "/tmp")):  # noqa: S108
        os.makedirs(inside(point))
        bind(os.path.join(scratch, name), inside(point), writable=True)

    for directory in SYSTEM_DIRS:
        _make_mount_point(inside(directory), is_file=False)
        bind(directory, inside(directory), writable=False)
    for name in SYSTEM_LINKS_OR_DIRS:
        if os.path.islink(name):
            os.symlink(os.readlink(name), inside(name))
        elif os.path.isdir(name):
            _make_mount_point(inside(name), is_file=False)
            bind(name, inside(name), writable=False)
    for file in SYSTEM_FILES:
        if os.path.isfile(file):
            _make_mount_point(inside(file), is_file=True)
            bind(file, inside(file), writable=False)
    for directory in library_dirs:
        _make_mount_point(inside(directory), is_file=False)
        bind(directory, inside(directory), writable=False)

    os.makedirs(inside("/dev"))
    for node in DEVICE_NODES:
        _make_mount_point(inside(f"/dev/{node}"), is_file=True)
        bind(f"/dev/{node}", inside(f"/dev/{node}"), writable=True, devices=True)
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


def finish_private_root(root: str, model_file: str, prepared_dir: str | None) -> None:
    """Add the run's FMU (and the server's extracted copy of it) read-only, make the
    root read-only and pivot into it; the cwd is then /sandbox."""

    def inside(path: str) -> str:
        return _inside(root, path)

    target = inside(os.path.join(SANDBOX_MOUNT_POINT, MODEL_FILE))
    _make_mount_point(target, is_file=True)
    bind(model_file, target, writable=False)
    if prepared_dir is not None:
        _make_mount_point(inside(MODEL_MOUNT_POINT), is_file=False)
        bind(prepared_dir, inside(MODEL_MOUNT_POINT), writable=False)
    mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chdir(root)
    pivot_root_here()
    os.chdir(SANDBOX_MOUNT_POINT)


def apply_rlimits(limits: SandboxLimits) -> None:
    """Per-process backstops under the run's cgroup: a clean malloc failure (RLIMIT_AS)
    is a better error than the cgroup's OOM kill, and RLIMIT_CPU ends a busy loop."""
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    # Soft limit: SIGXCPU; the hard limit one second later is a SIGKILL nobody can ignore.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))


def arrange_descriptors(log_fd: int, keep: list[int]) -> list[int]:
    """Point 0 at /dev/null and 1, 2 at the log; move `keep` to 3, 4, ...; close every
    other descriptor."""
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
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=True, errors="replace"
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True, errors="replace"
    )
    return arranged


def close_descriptors_except(keep: set[int]) -> None:
    first = 3
    for fd in sorted(keep):
        if fd >= first:
            os.closerange(first, fd)
            first = fd + 1
    os.closerange(first, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def write_user_namespace_maps(outer_uid: int, outer_gid: int) -> None:
    """Map the caller's uid/gid to 65534 inside the user namespace just unshared."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"65534 {outer_uid} 1")
    Path("/proc/self/gid_map").write_text(f"65534 {outer_gid} 1")


def sethostname(name: bytes) -> None:
    _libc.sethostname(name, ctypes.c_size_t(len(name)))
