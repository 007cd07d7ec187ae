"""The model process's seccomp-BPF filter: an allowlist, for x86_64 and aarch64.

Why an allowlist: the model is native code from a stranger, and the kernel is the
one part of the sandbox every run shares. A denylist only refuses what we thought
of; every syscall added to Linux after it was written (io_uring, fsopen, ...) would
be allowed. Here a syscall must be named to reach the kernel at all.

What the model process needs was measured, not guessed: `strace -f` of a forked
child that, after importing what the sandbox server preloads, simulates every good
test FMU (FMI 1/2/3, CS and ME, CVode and Euler, with inputs) and saves the
result. After the imports it used 25 syscalls: read, write, openat, close, lseek,
newfstatat, stat, fcntl, ioctl (TCGETS only, from Python's isatty on open()), dup,
getdents64, getcwd, chdir, mkdir, rmdir, unlink, unlinkat (fmpy extracts into a temp
dir and removes it), mmap, mprotect, munmap, brk (dlopen of the FMU and of the
sundials libraries), getpid, getrandom (tempfile names), exit_group, and the
getppid used as the marker. A second trace, of an OpenMP + C++ std::thread/async
library, Python threads, multiprocessing and a subprocess under the filter, added
clone (after clone3's ENOSYS), set_robust_list, rseq, futex, mbind, madvise,
sched_getaffinity, prctl(PR_SET_NAME), link (sem_open), vfork, execve, wait4,
pipe2, poll, setitimer. The rest of the list is what real FMUs may bring along and
costs the kernel nothing new: sched_setaffinity, sysinfo, NUMA policies, timers,
signals, epoll, Unix sockets, FIFOs, fchmodat2 (glibc 2.39 uses it and falls back
only on ENOSYS). Refused are the calls that reach privileged or complex kernel code
a model never needs: mounts and namespaces, ptrace and cross-process memory access,
bpf, keyrings, io_uring, perf, userfaultfd, module loading, kexec, clock setting,
handle-based opens, memfd_create.

Refused calls fail with EPERM, so a library that probes for a feature sees "not
permitted" and carries on; only a call from the wrong ABI (another audit arch, or
the x32 ABI on x86_64, which has its own syscall numbers) kills the process, since
then the numbers this filter compares mean something else.
"""

from __future__ import annotations

import ctypes
import errno
import platform

from fmuengine.sandbox.syscall_tables import SYSCALL_NUMBERS

# Audit architectures (linux/audit.h): EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
AUDIT_ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# Return values (linux/seccomp.h); an action's low 16 bits carry the errno.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
ALLOW = SECCOMP_RET_ALLOW
KILL = SECCOMP_RET_KILL_PROCESS
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
ENOTTY = SECCOMP_RET_ERRNO | errno.ENOTTY

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_{JEQ,JGE,JSET}|BPF_K, BPF_RET|BPF_K.
LOAD_WORD, JUMP_EQ, JUMP_GE, JUMP_SET, RETURN = 0x20, 0x15, 0x35, 0x45, 0x06
# struct seccomp_data: u32 nr, u32 arch, u64 instruction_pointer, u64 args[6].
# Both architectures are little-endian: an argument's low 32 bits come first.
NR_OFFSET, ARCH_OFFSET, ARGS_OFFSET = 0, 4, 16
MAX_JUMP = 255  # a BPF jump offset is one byte

AF_UNIX = 1
# Namespace flags (linux/sched.h). clone() takes only the low 32 bits of its flags.
ANY_NAMESPACE = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
# The ioctls a process without a terminal uses on files, pipes and sockets; the
# numbers are the same on both architectures (asm-generic/ioctls.h). Python calls
# TCGETS (isatty) on every file it opens with buffering; termios2 glibcs use TCGETS2.
ALLOWED_IOCTLS = (
    0x5401,  # TCGETS
    0x802C542A,  # TCGETS2
    0x5413,  # TIOCGWINSZ
    0x541B,  # FIONREAD
    0x5421,  # FIONBIO
    0x5450,  # FIONCLEX
    0x5451,  # FIOCLEX
)

_FILES = (
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
    "lseek", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents",
    "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
    "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync_file_range",
    "utime", "utimes", "futimesat", "utimensat", "umask", "flock", "fadvise64",
    "readahead", "copy_file_range", "sendfile",
    # FIFOs and socket files; a device node needs CAP_MKNOD, which the model lacks.
    "mknod", "mknodat",
    # shutil.copy2 copies extended attributes and only tolerates ENOTSUP/ENODATA/EINVAL.
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
)  # fmt: skip
_MEMORY = (
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore",
    "mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier",
    # NUMA policies of the process's own memory (OpenMP runtimes, numpy's allocator).
    "get_mempolicy", "set_mempolicy", "mbind",
    "pkey_mprotect", "pkey_alloc", "pkey_free",
)  # fmt: skip
_PROCESSES = (
    # clone is checked (no namespace flags); fork/vfork/execve let an FMU run a
    # helper, which inherits this filter, no_new_privs and the rlimits.
    "clone", "fork", "vfork", "execve", "exit", "exit_group", "wait4", "waitid",
    # Signals reach only processes the model could signal anyway (same uid).
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "pidfd_open", "pidfd_send_signal",
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid",
    "getresuid", "getresgid", "getgroups", "getpgid", "getpgrp", "getsid", "setsid",
    "setpgid", "set_tid_address", "set_robust_list", "rseq", "arch_prctl",
    # prctl is checked: PR_SET_SECCOMP is refused like seccomp() itself.
    "prctl", "capget", "getrusage", "times", "getpriority", "setpriority",
    "getrlimit", "setrlimit", "prlimit64", "uname", "sysinfo", "getcpu",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
    "sched_getattr", "sched_setattr",
)  # fmt: skip
_TIME_AND_SIGNALS = (
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
    "time", "alarm", "getitimer", "setitimer", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "pause",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "sigaltstack", "signalfd", "signalfd4", "restart_syscall",
)  # fmt: skip
_DESCRIPTORS = (
    "futex", "futex_waitv", "dup", "dup2", "dup3", "fcntl",
    "ioctl",  # checked: ALLOWED_IOCTLS, others fail with ENOTTY as on a non-terminal
    "pipe", "pipe2", "poll", "ppoll", "select", "pselect6", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2", "getrandom",
    # socket and socketpair are checked: Unix sockets only.
    "socket", "socketpair", "bind", "connect", "listen", "accept", "accept4", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "getsockname", "getpeername", "setsockopt", "getsockopt",
)  # fmt: skip
ALLOWED_SYSCALLS: tuple[str, ...] = _FILES + _MEMORY + _PROCESSES + _TIME_AND_SIGNALS + _DESCRIPTORS

# Not on the list, named so that tests can call them (and a reader sees they were
# considered). seccomp: stacking a filter could only restrict the model further,
# but it reaches the kernel's filter attach, BPF translation and user-notification
# code, which no model needs. The setuid family is harmless after no_new_privs
# without capabilities, and equally unneeded.
REFUSED_SYSCALLS: tuple[str, ...] = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "ptrace",
    "process_vm_readv", "process_vm_writev", "bpf", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "perf_event_open",
    "userfaultfd", "modify_ldt", "personality", "memfd_create", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "open_by_handle_at",
    "name_to_handle_at", "fsopen", "fsmount", "fsconfig", "fspick", "open_tree",
    "move_mount", "mount_setattr", "iopl", "ioperm", "settimeofday", "clock_settime",
    "adjtimex", "clock_adjtime", "lookup_dcookie", "uselib", "vhangup", "pidfd_getfd",
    "process_madvise", "kcmp", "seccomp", "clone3", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
)  # fmt: skip

Instruction = tuple[int, int, int, int]
# What the filter does for one syscall: a return value, or a block of instructions
# that looks at the arguments (it ends in returns; its jumps stay inside it).
Action = int | tuple[Instruction, ...]


def _arg(index: int) -> Instruction:
    """Load an argument's low 32 bits: all the kernel reads of the ones checked here."""
    return (LOAD_WORD, 0, 0, ARGS_OFFSET + 8 * index)


def _if_arg_in(index: int, values: tuple[int, ...], then: int, otherwise: int) -> Action:
    count = len(values)
    return (
        _arg(index),
        *((JUMP_EQ, count - position, 0, value) for position, value in enumerate(values)),
        (RETURN, 0, 0, otherwise),
        (RETURN, 0, 0, then),
    )


def _allow_without_bits(index: int, mask: int, otherwise: int) -> Action:
    return (_arg(index), (JUMP_SET, 0, 1, mask), (RETURN, 0, 0, otherwise), (RETURN, 0, 0, ALLOW))


# Syscalls whose action is not a plain ALLOW.
SYSCALL_RULES: dict[str, Action] = {
    "socket": _if_arg_in(0, (AF_UNIX,), ALLOW, EPERM),
    "socketpair": _if_arg_in(0, (AF_UNIX,), ALLOW, EPERM),
    "clone": _allow_without_bits(0, ANY_NAMESPACE, EPERM),
    "ioctl": _if_arg_in(1, ALLOWED_IOCTLS, ALLOW, ENOTTY),
    "prctl": _if_arg_in(0, (PR_SET_SECCOMP,), EPERM, ALLOW),
    # glibc's pthread_create and fork try clone3 first and use clone on ENOSYS only;
    # clone3 passes its flags in memory, where a filter cannot read them.
    "clone3": ENOSYS,
}


def seccomp_supported() -> bool:
    """True where this module has syscall tables: x86_64 and aarch64."""
    return platform.machine() in AUDIT_ARCHES


def _runs(machine: str) -> list[tuple[int, Action]]:
    """The actions by syscall number as (first number, action) of consecutive numbers
    with the same action, up to 2**32 - 1; a number not named is refused."""
    numbers = SYSCALL_NUMBERS[machine]
    by_number: dict[int, Action] = {numbers[n]: ALLOW for n in ALLOWED_SYSCALLS if n in numbers}
    by_number.update({numbers[n]: a for n, a in SYSCALL_RULES.items() if n in numbers})
    starts: list[tuple[int, Action]] = [(0, EPERM)]
    for number in sorted(by_number):
        starts += [(number, by_number[number]), (number + 1, EPERM)]
    if machine == "x86_64":
        starts.append((X32_SYSCALL_BIT, KILL))  # and above: nothing valid lives there
    runs: list[tuple[int, Action]] = []
    for start, action in starts:
        if runs and runs[-1][0] == start:  # an empty run
            runs.pop()
        if not runs or runs[-1][1] != action:
            runs.append((start, action))
    return runs


def _search(runs: list[tuple[int, Action]]) -> list[Instruction]:
    """A binary search over the runs (unsigned compares), each leaf its action: at
    most 7 compares to find a syscall's run instead of a walk along 220 names.
    Measured on x86_64 (Linux 6.18, a VM): the filter adds about 45 ns to a syscall
    (getppid 166 -> 217 ns, read(-1) 116 -> 165 ns), whichever its number."""
    if len(runs) == 1:
        action = runs[0][1]
        return [(RETURN, 0, 0, action)] if isinstance(action, int) else list(action)
    middle = len(runs) // 2
    below, above = _search(runs[:middle]), _search(runs[middle:])
    if len(below) > MAX_JUMP:
        raise ValueError("the filter's search tree has a jump longer than BPF allows")
    return [(JUMP_GE, len(below), 0, runs[middle][0]), *below, *above]


def build_program(machine: str) -> list[Instruction]:
    """The filter for a platform.machine() value, as (code, jt, jf, k) instructions:
    kill a call from another ABI, then look up the syscall number."""
    if machine not in AUDIT_ARCHES:
        raise ValueError(f"no seccomp filter for the {machine!r} architecture")
    return [
        (LOAD_WORD, 0, 0, ARCH_OFFSET),
        (JUMP_EQ, 1, 0, AUDIT_ARCHES[machine]),
        (RETURN, 0, 0, KILL),
        (LOAD_WORD, 0, 0, NR_OFFSET),
        *_search(_runs(machine)),
    ]


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


_prepared: tuple[ctypes.CDLL, _SockFprog, ctypes.Array[_SockFilter]] | None = None


def prepare_seccomp_filter() -> tuple[ctypes.CDLL, _SockFprog]:
    """Build the program once per process (the server calls this before it forks, so
    every job's model process only makes the prctl call: building it in Python took
    about a millisecond per run). Raises OSError(ENOSYS) on an unknown machine."""
    global _prepared
    if _prepared is None:
        machine = platform.machine()
        if machine not in AUDIT_ARCHES:
            raise OSError(errno.ENOSYS, f"no seccomp filter for the {machine} architecture")
        program = build_program(machine)
        filters = (_SockFilter * len(program))(*(_SockFilter(*line) for line in program))
        _prepared = (ctypes.CDLL(None, use_errno=True), _SockFprog(len(program), filters), filters)
    return _prepared[0], _prepared[1]


def install_seccomp_filter() -> None:
    """Install the filter on the calling thread and every process it starts later.

    The caller must have set PR_SET_NO_NEW_PRIVS and be single-threaded (a freshly
    forked process is): threads that already exist keep running unfiltered.
    Raises OSError(ENOSYS) on an architecture without tables, OSError from prctl.
    """
    libc, fprog = prepare_seccomp_filter()
    zero = ctypes.c_ulong(0)
    mode = ctypes.c_ulong(SECCOMP_MODE_FILTER)
    if libc.prctl(ctypes.c_int(PR_SET_SECCOMP), mode, ctypes.byref(fprog), zero, zero) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(code, code)}")
