"""Per-run cgroups against the real kernel (cgroup v1 on the development machine) and
the v2 code path against a fake v2 tree.

The kernel tests need root and writable memory, pids and cpu hierarchies; elsewhere
they skip with the reason detect_cgroups gives. Each test session uses its own
parent (fmugw-test-<pid>) so a sandbox server running on the same machine, whose
runs live under fmugw-sandbox, is never swept by these tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fmuengine.sandbox import cgroups
from fmuengine.sandbox.cgroups import (
    CgroupLimits,
    CgroupUnavailable,
    cgroup_unavailable_reason,
    detect_cgroups,
)

pytestmark = pytest.mark.sandbox

MiB = 1 << 20
PARENT = f"fmugw-test-{os.getpid()}"


@pytest.fixture(scope="module")
def support():
    if os.geteuid() != 0:
        pytest.skip("cgroup tests need root (they create cgroups and move processes)")
    found = detect_cgroups(parent_name=PARENT)
    if found is None:
        pytest.skip(f"no usable cgroups: {cgroup_unavailable_reason(parent_name=PARENT)}")
    yield found
    found.sweep()
    for parent in found.parents:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(parent)


@pytest.fixture
def runs(support):
    """Make run cgroups with unique names; all removed at the end of the test."""
    made: list[cgroups.RunCgroup] = []

    def make(limits: CgroupLimits, label: str = "r") -> cgroups.RunCgroup:
        run = support.create_run(f"{label}{len(made)}-{os.getpid()}", limits)
        made.append(run)
        return run

    yield make
    for run in made:
        assert run.remove()


@pytest.fixture
def children():
    """Pids forked by a test; SIGKILLed and reaped at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def spawn(children: list[int], run: cgroups.RunCgroup, body: Callable[[], int | None]) -> int:
    """Fork a child that waits until it is in `run`, then runs body; exit code = result."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(ready_w)
            os.read(ready_r, 1)
            code = body() or 0
        finally:
            os._exit(code)
    os.close(ready_r)
    children.append(pid)
    try:
        run.add(pid)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # before it reads EOF: nothing runs outside the run
        os.close(ready_w)
        raise
    os.write(ready_w, b"x")
    os.close(ready_w)
    return pid


def wait(pid: int, children: list[int], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.remove(pid)
            return status
        time.sleep(0.01)
    raise AssertionError(f"child {pid} still running after {timeout} s")


def killed_by_sigkill(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def fill(fd: int, size: int) -> None:
    chunk = b"\1" * MiB
    for _ in range(size // MiB):
        os.write(fd, chunk)


def write_memfd() -> int:
    fd = os.memfd_create("fill")
    try:
        fill(fd, 256 * MiB)
    except OSError:
        return 3  # refused with an error instead of the OOM kill
    return 0


def test_memory_cap_covers_memfd(runs, children):
    run = runs(CgroupLimits(memory_bytes=64 * MiB, max_processes=10))
    status = wait(spawn(children, run, write_memfd), children)
    assert killed_by_sigkill(status), f"child ended with status {status}"
    usage = run.usage()
    assert usage.oom_kills >= 1
    assert usage.memory_limit_hits >= 1
    assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes <= 64 * MiB
    assert os.getpid()  # the test process is alive and outside the run


def test_memory_cap_covers_tmpfs(runs, children):
    libc = ctypes.CDLL(None, use_errno=True)
    mount_point = tempfile.mkdtemp(prefix="cgroup-tmpfs-")

    def write_tmpfs() -> int:
        if libc.unshare(0x20000) != 0:  # CLONE_NEWNS: the tmpfs dies with this process
            return 4
        if libc.mount(None, b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC|MS_PRIVATE
            return 5
        if libc.mount(b"tmpfs", mount_point.encode(), b"tmpfs", 0, b"size=1g") != 0:
            return 6
        fd = os.open(os.path.join(mount_point, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fill(fd, 256 * MiB)
        except OSError:
            return 3
        return 0

    try:
        run = runs(CgroupLimits(memory_bytes=64 * MiB, max_processes=10))
        status = wait(spawn(children, run, write_tmpfs), children)
        assert killed_by_sigkill(status), f"child ended with status {status}"
        assert run.usage().oom_kills >= 1
    finally:
        os.rmdir(mount_point)


def test_memory_cap_covers_the_runs_children(runs, children):
    def four_grandchildren() -> int:
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                try:
                    held = bytearray(b"\1") * (32 * MiB)  # written, so really allocated
                    time.sleep(2)
                    os._exit(0 if held else 1)
                finally:
                    os._exit(70)
            pids.append(pid)
        return sum(killed_by_sigkill(os.waitpid(pid, 0)[1]) for pid in pids)

    run = runs(CgroupLimits(memory_bytes=64 * MiB, max_processes=10))
    status = wait(spawn(children, run, four_grandchildren), children)
    assert os.WIFEXITED(status), f"child ended with status {status}"
    assert os.WEXITSTATUS(status) >= 1, "no grandchild was OOM-killed"
    usage = run.usage()
    assert usage.oom_kills >= os.WEXITSTATUS(status)
    assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes > 48 * MiB


def test_pids_cap(support, runs, children):
    def fork_fifty() -> int:
        refused = 0
        for _ in range(50):
            try:
                pid = os.fork()
            except BlockingIOError:  # EAGAIN from pids.max
                refused += 1
                continue
            if pid == 0:
                time.sleep(60)
                os._exit(0)
        return refused

    run = runs(CgroupLimits(memory_bytes=256 * MiB, max_processes=10))
    status = wait(spawn(children, run, fork_fifty), children)
    assert os.WIFEXITED(status), f"child ended with status {status}"
    refused = os.WEXITSTATUS(status)
    left = cgroups._pids(run.dirs["pids"])
    assert refused == 50 - len(left)  # the 9 that fit (10 with the child) are still there
    assert 40 <= refused <= 41
    assert run.remove()
    assert not any(d.exists() for d in run.directories)
    for pid in left:  # orphans of the exited child: gone or a zombie of init
        with contextlib.suppress(FileNotFoundError):
            assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_cpu_share_between_runs(runs, children):
    def busy() -> int:
        while True:
            pass

    a = runs(CgroupLimits(memory_bytes=256 * MiB, max_processes=10, cpus=1.0), "cpuA")
    b = runs(CgroupLimits(memory_bytes=256 * MiB, max_processes=10, cpus=1.0), "cpuB")
    for _ in range(4):
        spawn(children, a, busy)
    spawn(children, b, busy)
    time.sleep(0.3)
    start, a0, b0 = time.monotonic(), a.usage().cpu_seconds, b.usage().cpu_seconds
    time.sleep(1.5)
    elapsed = time.monotonic() - start
    used_a, used_b = a.usage().cpu_seconds - a0, b.usage().cpu_seconds - b0
    a.kill_all()
    b.kill_all()
    # Without the cgroups B would get 1/5 of the CPU time; with equal shares about half.
    assert used_b / (used_a + used_b) >= 0.3, (used_a, used_b)
    assert used_a <= 1.35 * elapsed, (used_a, elapsed)  # quota: at most ~1 CPU


def test_remove_and_sweep(support, children):
    limits = CgroupLimits(memory_bytes=64 * MiB, max_processes=10)
    run = support.create_run(f"gone-{os.getpid()}", limits)
    status = wait(spawn(children, run, lambda: 0), children)
    assert os.WIFEXITED(status)
    assert run.remove()
    assert not any(d.exists() for d in run.directories)
    run.remove()  # already gone: no exception

    with pytest.raises(ValueError):
        support.create_run("../escape", limits)
    left = support.create_run(f"left-{os.getpid()}", limits)
    with pytest.raises(CgroupUnavailable):
        support.create_run(f"left-{os.getpid()}", limits)
    pid = spawn(children, left, lambda: time.sleep(60))
    time.sleep(0.05)
    assert support.sweep() == 1
    assert killed_by_sigkill(wait(pid, children, timeout=5))
    assert not any(d.exists() for d in left.directories)
    assert all(
        not p.name.startswith("run-") for parent in support.parents for p in parent.iterdir()
    )


def test_create_and_remove_are_cheap(support):
    limits = CgroupLimits(memory_bytes=64 * MiB, max_processes=10)
    started = time.perf_counter()
    for index in range(20):
        support.create_run(f"cheap{index}-{os.getpid()}", limits).remove()
    per_run = (time.perf_counter() - started) / 20
    assert per_run < 0.02, f"{per_run * 1e3:.1f} ms per create+remove"


# ---- v2 on a fake tree ------------------------------------------------------------


class FakeV2Kernel:
    """Plain files shaped like a cgroup2 mount; the kernel's side emulated just enough:
    interface files appear on mkdir, writes replace, subtree_control takes +/- words
    and refuses (EBUSY) a non-root cgroup with processes, cgroup.procs moves a pid,
    cgroup.kill empties the cgroup (no signal is sent: the pids are made up)."""

    FILES = {
        "cgroup.subtree_control": "",
        "cgroup.procs": "",
        "cgroup.kill": "",
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.oom.group": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "pids.max": "max",
        "cpu.weight": "100",
        "cpu.max": "max 100000",
        "cpu.stat": "usage_usec 0\n",
    }

    def __init__(self, root: Path, controllers: str = "cpuset cpu io memory pids") -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        root.mkdir()
        (root / "cgroup.controllers").write_text(controllers + "\n")
        (root / "cgroup.subtree_control").write_text("")
        (root / "cgroup.procs").write_text("1\n")

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        for name, text in self.FILES.items():
            (path / name).write_text(text)
        (path / "cgroup.controllers").write_text(
            (path.parent / "cgroup.subtree_control").read_text()
        )

    def rmdir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "gone", str(path))
        if (path / "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, "busy", str(path))
        shutil.rmtree(path)

    def write(self, path: Path, text: str) -> None:
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        self.writes.append((str(path.relative_to(self.root)), text))
        directory = path.parent
        if path.name == "cgroup.subtree_control":
            if directory != self.root and (directory / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, "no internal processes", str(path))
            enabled = path.read_text().split()
            for word in text.split():
                name = word.lstrip("+-")
                if word.startswith("+") and name not in enabled:
                    enabled.append(name)
                elif word.startswith("-") and name in enabled:
                    enabled.remove(name)
            path.write_text(" ".join(enabled))
        elif path.name == "cgroup.procs":
            for procs in self.root.rglob("cgroup.procs"):
                procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != text))
            path.write_text(path.read_text() + text + "\n")
        elif path.name == "cgroup.kill":
            (directory / "cgroup.procs").write_text("")
        else:
            path.write_text(text)


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    """There is no cgroup v2 with controllers on the development machine (v1 plus an
    empty cgroup2 at /sys/fs/cgroup/unified), so the v2 path is only checked here:
    which files get what, and how usage is parsed. Not checked against a real kernel."""
    kernel = FakeV2Kernel(tmp_path / "cgroup")
    monkeypatch.setattr(cgroups, "_mkdir", kernel.mkdir)
    monkeypatch.setattr(cgroups, "_rmdir", kernel.rmdir)
    monkeypatch.setattr(cgroups, "_write", kernel.write)
    monkeypatch.setattr(cgroups, "_own_cgroups", lambda: {"": "/"})
    return kernel


def test_v2_limits_usage_and_kill(fake_v2):
    root = fake_v2.root
    support = detect_cgroups(root)
    assert support is not None and support.version == 2
    parent = root / "fmugw-sandbox"
    assert support.parents == [parent]
    for directory in (root, parent):
        assert (directory / "cgroup.subtree_control").read_text().split() == [
            "memory",
            "pids",
            "cpu",
        ]
    run = support.create_run(
        "tok1", CgroupLimits(memory_bytes=64 * MiB, max_processes=12, cpus=1.5)
    )
    directory = parent / "run-tok1"
    expected = {
        "memory.max": str(64 * MiB),
        "memory.swap.max": "0",
        "memory.oom.group": "1",
        "pids.max": "12",
        "cpu.weight": "100",
        "cpu.max": "150000 100000",
    }
    for name, value in expected.items():
        assert (directory / name).read_text() == value, name

    run.add(999_999_901)
    assert (directory / "cgroup.procs").read_text().split() == ["999999901"]
    (directory / "memory.events").write_text(
        "low 0\nhigh 0\nmax 17\noom 2\noom_kill 3\noom_group_kill 1\n"
    )
    (directory / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (directory / "memory.peak").write_text(str(60 * MiB))
    usage = run.usage()
    assert (usage.oom_kills, usage.memory_limit_hits) == (3, 17)
    assert (usage.peak_memory_bytes, usage.cpu_seconds) == (60 * MiB, 2.5)

    run.add(999_999_902)
    support.create_run("tok2", CgroupLimits(memory_bytes=MiB, max_processes=1))
    assert support.sweep() == 2  # via cgroup.kill: the made-up pids get no signal
    assert ("fmugw-sandbox/run-tok1/cgroup.kill", "1") in fake_v2.writes
    assert not directory.exists()
    run.remove()  # already gone: no exception


def test_v2_server_not_in_root_moves_out_of_the_way(fake_v2, monkeypatch):
    root = fake_v2.root
    fake_v2.write(root / "cgroup.subtree_control", "+memory +pids +cpu")
    fake_v2.mkdir(root / "app")
    (root / "app" / "cgroup.procs").write_text("999999903\n999999904\n")
    monkeypatch.setattr(cgroups, "_own_cgroups", lambda: {"": "/app"})
    support = detect_cgroups(root)
    assert support is not None
    assert support.parents == [root / "app" / "fmugw-sandbox"]
    assert (root / "app" / "cgroup.procs").read_text() == ""
    assert (root / "app" / "fmugw-host" / "cgroup.procs").read_text().split() == [
        "999999903",
        "999999904",
    ]
    assert (root / "app" / "fmugw-sandbox" / "cgroup.subtree_control").read_text().split() == [
        "memory",
        "pids",
        "cpu",
    ]


def test_v2_without_the_controllers_is_unavailable(tmp_path, monkeypatch):
    kernel = FakeV2Kernel(tmp_path / "cgroup", controllers="cpuset io memory")
    monkeypatch.setattr(cgroups, "_write", kernel.write)
    monkeypatch.setattr(cgroups, "_own_cgroups", lambda: {"": "/"})
    assert detect_cgroups(kernel.root) is None
    assert "pids" in cgroup_unavailable_reason(kernel.root)
    assert detect_cgroups(tmp_path / "nothing") is None
