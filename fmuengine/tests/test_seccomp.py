"""The model process's seccomp allowlist, on the real kernel: good FMUs simulate under
it exactly as without it, what a model must not reach fails with EPERM, and a call
from another ABI kills the process. The aarch64 program is checked by running it
in a small BPF interpreter, and both syscall tables against known numbers."""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import platform
import re
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fmpy
import numpy as np
import pytest

from fmuengine.sandbox.seccomp import (
    ALLOWED_SYSCALLS,
    REFUSED_SYSCALLS,
    build_program,
    install_seccomp_filter,
    seccomp_supported,
)
from fmuengine.sandbox.syscall_tables import SYSCALL_NUMBERS

# What the sandbox server imports before it forks a model process.
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
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_GET_NO_NEW_PRIVS = 39
CLONE_NEWUSER = 0x10000000
FIONREAD = 0x541B
FIGETBSZ = 2  # a filesystem ioctl that works on a regular file
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | 1
RET_ENOSYS = 0x00050000 | 38
RET_ENOTTY = 0x00050000 | 25
MACHINE = platform.machine()
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# Imported here, before any fork, as the server does: the filter is installed after.
for _module in PRELOADED_MODULES:
    importlib.import_module(_module)

live_kernel = pytest.mark.skipif(not seccomp_supported(), reason=f"no seccomp filter for {MACHINE}")


def in_filtered_child(action: Callable[[], Any]) -> tuple[int, Any]:
    """Fork; the child sets no_new_privs, installs the filter, clears its environment
    (as the model process does, after the imports above) and runs `action`. Returns
    the child's wait status and what `action` returned, sent back as JSON by pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        exit_code, reply = 1, {"error": "the child did not finish"}
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            install_seccomp_filter()
            os.environ.clear()
            reply, exit_code = {"value": action()}, 0
        except BaseException as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        finally:
            try:
                os.write(write_end, json.dumps(reply).encode())
            finally:
                os._exit(exit_code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    reply = json.loads(data) if data else {}
    assert "error" not in reply, reply["error"]
    return status, reply.get("value")


def syscall_errno(name: str, *args: int) -> int:
    """A raw syscall by name on this machine: its errno, 0 when it succeeded."""
    ctypes.set_errno(0)
    number = SYSCALL_NUMBERS[MACHINE][name]
    result = LIBC.syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args))
    return ctypes.get_errno() if result == -1 else 0


# ---- good FMUs simulate under the filter as without it ----------------------------

INPUT_TABLE = np.array(
    [(0, 0), (0.5, 0), (0.5, 1), (1.0, 3), (2, 3)], dtype=[("time", "<f8"), ("u", "<f8")]
)
INPUTS_PARAMS = {
    "start_time": 0.0,
    "stop_time": 2.0,
    "output_interval": 0.05,
    "step_size": 0.001,
    "relative_tolerance": 1e-6,
    "start_values": {"k": 2.0, "T": 0.4, "x": 0.25},
    "input": INPUT_TABLE,
    "output": ["y", "u"],
}
GOOD_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "bouncing_ball CS": ("bouncing_ball", {"fmi_type": "CoSimulation"}),
    "bouncing_ball ME": ("bouncing_ball", {"fmi_type": "ModelExchange"}),
    "bouncing_ball1": (
        "bouncing_ball1",
        {"stop_time": 2.0, "output_interval": 0.02, "start_values": {"h": 1.5, "e": 0.8}},
    ),
    "bouncing_ball3": (
        "bouncing_ball3",
        {"stop_time": 2.0, "output_interval": 0.02, "start_values": {"h": 1.5}},
    ),
    "inputs_params ME CVode": (
        "inputs_params",
        {**INPUTS_PARAMS, "fmi_type": "ModelExchange", "solver": "CVode"},
    ),
    "inputs_params ME Euler": (
        "inputs_params",
        {**INPUTS_PARAMS, "fmi_type": "ModelExchange", "solver": "Euler"},
    ),
    "inputs_params CS": ("inputs_params", {**INPUTS_PARAMS, "fmi_type": "CoSimulation"}),
}


@live_kernel
@pytest.mark.parametrize("run", list(GOOD_RUNS))
def test_a_good_fmu_simulates_under_the_filter_as_without_it(fmu_paths, tmp_path, run):
    name, params = GOOD_RUNS[run]
    fmu, result_file = str(fmu_paths[name]), tmp_path / "result.npy"

    def simulate() -> str:
        result = fmpy.simulate_fmu(fmu, **params)
        np.save(result_file, np.asarray(result), allow_pickle=False)
        return "saved"

    status, reply = in_filtered_child(simulate)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reply == "saved"
    filtered = np.load(result_file, allow_pickle=False)
    direct = fmpy.simulate_fmu(fmu, **params)
    assert filtered.dtype == direct.dtype
    assert np.array_equal(filtered, direct)


@live_kernel
def test_threads_helpers_unix_sockets_and_terminal_ioctls_work(tmp_path):
    """What FMU runtimes do besides computing: threads (glibc gets ENOSYS from clone3
    and uses clone), a helper program (which stays filtered: its internet socket
    fails), Unix sockets, named pipes and the ioctls of files and pipes."""
    plain_file = tmp_path / "file"
    plain_file.write_bytes(b"data")

    def runtime_calls() -> dict[str, Any]:
        seen = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_ident()))
        thread.start()
        thread.join()
        helper = subprocess.run(
            [sys.executable, "-c", "import socket; socket.socket(socket.AF_INET)"],
            capture_output=True,
            text=True,
            check=False,
        )
        left, right = socket.socketpair(socket.AF_UNIX)
        left.sendall(b"ping")
        unix_stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix_stream.close()
        read_end, write_end = os.pipe()
        os.write(write_end, b"12345")
        waiting = ctypes.c_int(0)
        with plain_file.open("rb") as file:
            block_size = ctypes.c_int(0)
            file_ioctl = LIBC.ioctl(file.fileno(), FIGETBSZ, ctypes.byref(block_size))
            file_ioctl_errno = ctypes.get_errno()
        os.mkfifo(tmp_path / "fifo")
        return {
            "thread_ran": len(seen) == 1,
            "fifo": stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode),
            "helper_exit": helper.returncode,
            "helper_error": helper.stderr.strip().splitlines()[-1],
            "unix_reply": right.recv(4).decode(),
            "pipe_fionread": (LIBC.ioctl(read_end, FIONREAD, ctypes.byref(waiting)), waiting.value),
            "file_ioctl": (file_ioctl, file_ioctl_errno),
            "no_new_privs": LIBC.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
        }

    status, reply = in_filtered_child(runtime_calls)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reply["thread_ran"]
    assert reply["fifo"]
    assert reply["helper_exit"] == 1
    assert reply["helper_error"] == "PermissionError: [Errno 1] Operation not permitted"
    assert reply["unix_reply"] == "ping"
    assert reply["pipe_fionread"] == [0, 5]
    assert reply["file_ioctl"] == [-1, 25]  # ENOTTY, as if the file had no such ioctl
    assert reply["no_new_privs"] == 1


# ---- what the model must not reach ---------------------------------------------

# Arguments that do nothing even if a call got through (these tests may run as root):
# NULL pointers (EFAULT), a bad descriptor or pid, an unknown command, a query.
REFUSED_CALLS: dict[str, tuple[int, ...]] = {
    "mount": (0, 0, 0, 0, 0),
    "umount2": (0, 0),
    "unshare": (0,),  # no flags: a no-op
    "setns": (-1, 0),
    "ptrace": (-1, 0, 0, 0),  # no such request for pid 0
    "bpf": (-1, 0, 0),
    "keyctl": (-1, 0, 0, 0, 0),
    "io_uring_setup": (0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "userfaultfd": (-1,),
    "modify_ldt": (0, 0, 0),  # read 0 bytes
    "personality": (0xFFFFFFFF,),  # only asks for the current persona
    "memfd_create": (0, 0),
    "pivot_root": (0, 0),
    "chroot": (0,),
    "process_vm_readv": (0, 0, 0, 0, 0, 0),  # nothing to copy
    "kexec_load": (0, -1, 0, -1),  # too many segments, unknown flags
    "init_module": (0, 0, 0),
    "seccomp": (2, 0, 0),  # SECCOMP_GET_ACTION_AVAIL into NULL
    "open_by_handle_at": (-1, 0, 0),
    "pidfd_getfd": (-1, 0, 0),
}


@live_kernel
def test_kernel_interfaces_a_model_never_needs_fail_with_eperm():
    calls = {name: args for name, args in REFUSED_CALLS.items() if name in SYSCALL_NUMBERS[MACHINE]}

    def call_each() -> dict[str, int]:
        results = {name: syscall_errno(name, *args) for name, args in calls.items()}
        results["prctl(PR_SET_SECCOMP)"] = syscall_errno("prctl", PR_SET_SECCOMP, 0xFF, 0, 0, 0)
        results["clone3"] = syscall_errno("clone3", 0, 0)
        return results

    status, reply = in_filtered_child(call_each)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reply.pop("clone3") == 38  # ENOSYS: glibc falls back to clone
    assert reply == dict.fromkeys(reply, 1)  # EPERM
    assert ("modify_ldt" in reply) == (MACHINE == "x86_64")


@live_kernel
def test_only_unix_sockets_can_be_created():
    kinds = {
        "AF_UNIX": (socket.AF_UNIX, socket.SOCK_STREAM),
        "AF_INET": (socket.AF_INET, socket.SOCK_STREAM),
        "AF_INET6": (socket.AF_INET6, socket.SOCK_DGRAM),
        "AF_NETLINK": (socket.AF_NETLINK, socket.SOCK_RAW),
        "AF_PACKET": (socket.AF_PACKET, socket.SOCK_RAW),
    }

    def create_each() -> dict[str, int | None]:
        results: dict[str, int | None] = {}
        for label, (family, kind) in kinds.items():
            try:
                socket.socket(family, kind).close()
                results[label] = 0
            except OSError as error:
                results[label] = error.errno
        return results

    status, reply = in_filtered_child(create_each)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reply == {"AF_UNIX": 0, "AF_INET": 1, "AF_INET6": 1, "AF_NETLINK": 1, "AF_PACKET": 1}


@live_kernel
def test_clone_into_a_new_user_namespace_is_refused_and_fork_works():
    def clone_and_fork() -> dict[str, int]:
        ctypes.set_errno(0)
        number = SYSCALL_NUMBERS[MACHINE]["clone"]
        flags = CLONE_NEWUSER | signal.SIGCHLD
        pid = LIBC.syscall(ctypes.c_long(number), ctypes.c_long(flags), *[ctypes.c_long(0)] * 4)
        if pid == 0:  # it got through: the new process ends at once
            os._exit(0)
        if pid > 0:
            os.waitpid(pid, 0)
        clone_errno = ctypes.get_errno() if pid == -1 else 0
        child = os.fork()
        if child == 0:
            os._exit(7)
        _, status = os.waitpid(child, 0)
        return {"clone(CLONE_NEWUSER)": clone_errno, "fork": os.waitstatus_to_exitcode(status)}

    status, reply = in_filtered_child(clone_and_fork)

    assert os.waitstatus_to_exitcode(status) == 0
    assert reply == {"clone(CLONE_NEWUSER)": 1, "fork": 7}


@pytest.mark.skipif(MACHINE != "x86_64", reason="the x32 ABI exists on x86_64 only")
def test_a_call_from_the_x32_abi_kills_the_process():
    def getpid_through_x32() -> str:
        LIBC.syscall(ctypes.c_long(0x40000000 | SYSCALL_NUMBERS["x86_64"]["getpid"]))
        return "still alive"

    status, reply = in_filtered_child(getpid_through_x32)

    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS
    assert reply is None


# ---- the programs, in a BPF interpreter -------------------------------------------


def run_filter(
    program: list[tuple[int, int, int, int]], nr: int, arch: int, args: tuple[int, ...] = ()
) -> int:
    """What the kernel would return for one call (struct seccomp_data, little-endian);
    knows the instructions the filter may use and fails on any other."""
    data = nr.to_bytes(4, "little") + arch.to_bytes(4, "little") + bytes(8)
    data += b"".join(arg.to_bytes(8, "little") for arg in (*args, 0, 0, 0, 0, 0, 0)[:6])
    accumulator, position = 0, 0
    while True:
        code, jump_true, jump_false, k = program[position]
        if code == 0x06:  # BPF_RET|BPF_K
            return k
        if code == 0x20:  # BPF_LD|BPF_W|BPF_ABS
            accumulator, position = int.from_bytes(data[k : k + 4], "little"), position + 1
            continue
        taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k != 0}[code]
        position += 1 + (jump_true if taken else jump_false)


@pytest.mark.parametrize(
    ("machine", "audit_arch", "other_arch"),
    [
        ("x86_64", AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64),
        ("aarch64", AUDIT_ARCH_AARCH64, 0x40000003),
    ],
)
def test_each_program_allows_its_list_refuses_the_rest_and_kills_other_abis(
    machine, audit_arch, other_arch
):
    program = build_program(machine)
    numbers = SYSCALL_NUMBERS[machine]

    def verdict(name: str, *args: int) -> int:
        return run_filter(program, numbers[name], audit_arch, args)

    assert program[1][3] == audit_arch
    checked = {"socket", "socketpair", "clone", "ioctl", "prctl"}
    assert {
        verdict(name) for name in ALLOWED_SYSCALLS if name in numbers and name not in checked
    } == {SECCOMP_RET_ALLOW}
    refused = {name: verdict(name) for name in REFUSED_SYSCALLS if name in numbers}
    assert refused.pop("clone3") == RET_ENOSYS
    assert set(refused.values()) == {RET_EPERM}
    assert run_filter(program, 1000, audit_arch) == RET_EPERM
    assert verdict("socket", socket.AF_UNIX, socket.SOCK_STREAM) == SECCOMP_RET_ALLOW
    assert verdict("socketpair", socket.AF_UNIX) == SECCOMP_RET_ALLOW
    assert verdict("socket", socket.AF_INET) == RET_EPERM
    assert verdict("socket", (1 << 32) | socket.AF_INET) == RET_EPERM  # the kernel reads an int
    assert verdict("socketpair", socket.AF_INET6) == RET_EPERM
    assert verdict("clone", 0x003D0F00 | signal.SIGCHLD) == SECCOMP_RET_ALLOW  # a thread
    assert verdict("clone", CLONE_NEWUSER | signal.SIGCHLD) == RET_EPERM
    assert verdict("clone", 0x40000000) == RET_EPERM  # CLONE_NEWNET
    assert verdict("ioctl", 0, 0x5401) == SECCOMP_RET_ALLOW  # TCGETS
    assert verdict("ioctl", 0, 0x5412) == RET_ENOTTY  # TIOCSTI
    assert verdict("prctl", 15) == SECCOMP_RET_ALLOW  # PR_SET_NAME
    assert verdict("prctl", PR_SET_SECCOMP) == RET_EPERM
    assert run_filter(program, numbers["read"], other_arch) == SECCOMP_RET_KILL_PROCESS
    for high in (0x40000000 | numbers["read"], 0xFFFFFFFF):  # the x32 ABI's range on x86_64
        expected = SECCOMP_RET_KILL_PROCESS if machine == "x86_64" else RET_EPERM
        assert run_filter(program, high, audit_arch) == expected


def test_an_unknown_machine_has_no_program():
    with pytest.raises(ValueError, match="riscv64"):
        build_program("riscv64")


# ---- the syscall tables ------------------------------------------------------


def test_tables_have_the_known_numbers_of_both_architectures():
    known = {
        "x86_64": {
            "read": 0, "openat": 257, "mount": 165, "memfd_create": 319, "clone": 56,
            "socket": 41, "ioctl": 16, "newfstatat": 262, "clone3": 435, "rseq": 334,
            "modify_ldt": 154, "io_uring_setup": 425, "mmap": 9, "exit_group": 231,
        },
        "aarch64": {
            "read": 63, "openat": 56, "mount": 40, "memfd_create": 279, "clone": 220,
            "socket": 198, "ioctl": 29, "newfstatat": 79, "clone3": 435, "rseq": 293,
            "io_uring_setup": 425, "mmap": 222, "exit_group": 94, "fstat": 80,
        },
    }  # fmt: skip
    for machine, numbers in known.items():
        assert {name: SYSCALL_NUMBERS[machine][name] for name in numbers} == numbers
    for name in ("open", "stat", "fork", "vfork", "pipe", "poll", "modify_ldt", "arch_prctl"):
        assert name not in SYSCALL_NUMBERS["aarch64"]
    assert all(len(set(table.values())) == len(table) for table in SYSCALL_NUMBERS.values())


def test_every_named_syscall_is_in_a_table_and_allowed_or_refused_not_both():
    named = set(ALLOWED_SYSCALLS) | set(REFUSED_SYSCALLS)
    assert not set(ALLOWED_SYSCALLS) & set(REFUSED_SYSCALLS)
    assert named == set(SYSCALL_NUMBERS["x86_64"]) | set(SYSCALL_NUMBERS["aarch64"])


def header_numbers(machine: str) -> dict[str, int] | None:
    """Syscall numbers from the installed kernel headers, None without them."""
    if machine == "x86_64":
        header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        if not header.exists():
            return None
        return {
            m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", header.read_text())
        }
    header = Path("/usr/include/asm-generic/unistd.h")
    if not header.exists():
        return None
    text = header.read_text()
    numbers = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}
    generic = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR3264_(\w+)\s+(\d+)", text)}
    # The 64-bit names of the calls whose 32-bit variants differ (fcntl, fstat, mmap, ...).
    start = text.index("#if __BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)")
    for m in re.finditer(
        r"#define __NR_(\w+)\s+__NR3264_(\w+)", text[start : text.index("#else", start)]
    ):
        if m[2] in generic:
            numbers[m[1]] = generic[m[2]]
    return numbers


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_tables_agree_with_the_installed_kernel_headers(machine):
    numbers = header_numbers(machine)
    if numbers is None:
        pytest.skip("no kernel headers for this architecture (linux-libc-dev)")
    named = set(ALLOWED_SYSCALLS) | set(REFUSED_SYSCALLS)
    table = SYSCALL_NUMBERS[machine]
    assert {name: number for name, number in table.items() if name in numbers} == {
        name: numbers[name] for name in named if name in numbers
    }
    # A name the headers lack must be newer than they are (fchmodat2 on Debian 12).
    newer = {name: number for name, number in table.items() if name not in numbers}
    assert all(number > max(numbers.values()) for number in newer.values()), newer
