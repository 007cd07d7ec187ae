"""One cgroup per run: a memory cap over all of the run's processes and their memfd,
tmpfs and shm pages (swap 0), a pids cap, and an equal CPU share with a quota.

Why: rlimits are per process, RLIMIT_AS does not count memfd/tmpfs/pipe pages, and
8 processes at 300 CPU-s each can starve another run. A memory cgroup is charged for
the shmem pages its processes create, so one cap covers all of that (a child writing
256 MiB into a memfd, or a tmpfs file, in a run capped at 64 MiB was OOM-killed).
Equal cpu weight per run plus a quota of `cpus` CPUs keeps runs from starving each
other (2 cores here: a run with 1 busy process next to one with 4 got 49-50% of
their CPU time, also with 2 busy processes outside both; without cgroups, 19%).

Layout and where it lives. The parent `fmugw-sandbox` is created under the cgroup
the *server* runs in (read from /proc/self/cgroup), not under the root: limits
and accounting of whatever contains the server (a container, a systemd unit) then
still cover the runs. If that cgroup is not visible under the mount (a container's
view), the mount's root is used.

  v2  <server cgroup X>/fmugw-sandbox/run-<name>   (memory, pids, cpu enabled in the
      subtree_control of X and of fmugw-sandbox). The no-internal-processes rule
      forbids enabling controllers in a non-root cgroup that has processes, so when
      X refuses (EBUSY) every process of X is moved into the leaf X/fmugw-host first
      (what docker-in-docker does); fmugw-sandbox itself never holds processes. On a
      Fly machine the server is expected in the root cgroup, which is exempt from
      the rule, so nothing is moved there (not verified on Fly: no v2 here).
  v1  <own cgroup in each of memory, pids, cpu (+cpuacct when mounted separately)>
      /fmugw-sandbox/run-<name>; v1 has no such rule.

Per run (v2): memory.max=cap, memory.swap.max=0, memory.oom.group=1 (an OOM kills
the whole run), pids.max, cpu.weight=100, cpu.max="<cpus*100000> 100000". Per run
(v1): memory.limit_in_bytes then memory.memsw.limit_in_bytes (swap 0),
memory.swappiness=0 where writable, pids.max, cpu.shares=1024, cpu.cfs_quota_us. v1
has no oom.group: the OOM killer kills the biggest process only, so the monitor
should kill_all() once usage().oom_kills > 0. pids.max counts threads too.

Call order for the monitor (root, host mount namespace): create_run, fork the model,
add(pid) before the model runs anything it was given. On v2 with the server not in
the root cgroup, add before the monitor unshares CLONE_NEWCGROUP: v2 refuses a move
unless the writer's namespace root is an ancestor of both cgroups (v1 here accepted
it after the unshare). Pages a run leaves in a shared tmpfs (/dev/shm, not its private
/tmp) stay charged to its cgroup after it ends (20 MiB here); rmdir still succeeded.
Zombies do not keep a cgroup busy: rmdir succeeded here on a killed, unreaped child.
Several servers in one cgroup would need distinct `parent_name`s: sweep() kills
every run-* below its parent.

Cost (v1 here, 2 cores): create_run ~0.35 ms, remove of an empty run ~0.25 ms. add()
is the expensive step: moving a process takes cgroup_threadgroup_rwsem for writing,
which waits an RCU grace period (7-23 ms measured) unless another move happened in
the last ~20 ms. The cgroup mount option `favordynmods` (kernel >= 6.0; forks and
exits get slightly dearer) made it 0.3 ms; adding a pre-forked spare ahead of its run
takes the cost off the run's path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "fmugw-sandbox"
HOST_LEAF = "fmugw-host"
RUN_PREFIX = "run-"
CPU_PERIOD_US = 100_000
V2_CONTROLLERS = ("memory", "pids", "cpu")
# v1 hierarchy -> a file every non-root cgroup of it has (proves the mount is that one).
V1_HIERARCHIES = {
    "memory": "memory.limit_in_bytes",
    "pids": "pids.max",
    "cpu": "cpu.shares",
    "cpuacct": "cpuacct.usage",
}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # no '/', and always after 'run-'
KILL_TIMEOUT, RMDIR_TIMEOUT = 2.0, 1.0


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    max_processes: int
    cpus: float = 1.0


@dataclass(frozen=True)
class CgroupUsage:
    oom_kills: int
    memory_limit_hits: int
    peak_memory_bytes: int | None
    cpu_seconds: float | None


class CgroupUnavailable(Exception):
    pass


# ---- the file system seam (a test of v2 replaces these with a fake kernel) ------------


def _mkdir(path: Path) -> None:
    os.mkdir(path, 0o755)


def _rmdir(path: Path) -> None:
    os.rmdir(path)


def _write(path: Path, text: str) -> None:
    """One write(2) to an existing file, as cgroupfs wants; no O_CREAT, so a typo fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _keyed(path: Path) -> dict[str, int]:
    """'key value' lines (memory.events, cpu.stat, memory.oom_control) as a dict."""
    values = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _pids(directory: Path) -> list[int]:
    return [int(word) for word in (_read(directory / "cgroup.procs") or "").split()]


def _own_cgroups(proc_file: Path = Path("/proc/self/cgroup")) -> dict[str, str]:
    """Controller -> path of this process's cgroup; the v2 line ('0::/x') is under ''."""
    paths = {}
    for line in (_read(proc_file) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _under(mount: Path, cgroup_path: str) -> Path:
    candidate = mount / cgroup_path.strip("/")
    return candidate if (candidate / "cgroup.procs").is_file() else mount


def _kill_dirs(dirs: list[Path], kill_file: Path | None) -> bool:
    """SIGKILL every process in `dirs` until none is left; True when empty.

    cgroup.kill (v2, kernel >= 5.14) kills atomically, forks included; without it each
    listed pid is killed in a loop, which catches what was forked meanwhile (the pids
    cap bounds that) but has the usual pid-reuse window between reading and killing.
    """
    if kill_file is not None and kill_file.exists():
        try:
            _write(kill_file, "1")
        except OSError as error:
            log.warning("cgroup: writing %s failed: %s", kill_file, error)
    deadline = time.monotonic() + KILL_TIMEOUT
    while True:
        pids = {pid for directory in dirs for pid in _pids(directory)}
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)


class RunCgroup:
    """The cgroup(s) of one run: one directory (v2) or one per v1 hierarchy."""

    def __init__(self, version: int, name: str, dirs: dict[str, Path]) -> None:
        self.version = version
        self.name = name
        self.dirs = dirs  # controller -> directory; in v2 all the same directory

    @property
    def directories(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def add(self, pid: int) -> None:
        """Move `pid` into the run (every hierarchy); CgroupUnavailable if refused."""
        for directory in self.directories:
            try:
                _write(directory / "cgroup.procs", str(pid))
            except OSError as error:
                raise CgroupUnavailable(
                    f"cannot move pid {pid} into {directory}: {error}"
                ) from error

    def exists(self) -> bool:
        return all(directory.is_dir() for directory in self.directories)

    def set_job_limits(self, limits: CgroupLimits) -> None:
        """The caps that vary per job (memory, processes, CPU quota), fewest writes:
        a small run's monitor spent about a millisecond writing cgroup files."""
        if limits.memory_bytes <= 0 or limits.max_processes < 1 or limits.cpus <= 0:
            raise ValueError(f"bad cgroup limits {limits}")
        if self.version == 2:
            self.set_limits(limits)
            return
        memory = self.dirs["memory"]
        limit_file = memory / "memory.limit_in_bytes"
        memsw_file = memory / "memory.memsw.limit_in_bytes"
        files = [limit_file, *([memsw_file] if memsw_file.exists() else [])]
        current = _read_int(limit_file) or 0
        if current != limits.memory_bytes:
            for file in reversed(files) if limits.memory_bytes > current else files:
                _write(file, str(limits.memory_bytes))
        _write(self.dirs["pids"] / "pids.max", str(limits.max_processes))
        quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
        _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    def oom_kills(self) -> int:
        if self.version == 2:
            events = _keyed(self.dirs["memory"] / "memory.events")
            return max(events.get("oom_kill", 0), events.get("oom_group_kill", 0))
        return _keyed(self.dirs["memory"] / "memory.oom_control").get("oom_kill", 0)

    def cpu_seconds(self) -> float | None:
        if self.version == 2:
            usec = _keyed(self.dirs["cpu"] / "cpu.stat").get("usage_usec")
            return usec / 1e6 if usec is not None else None
        cpuacct = self.dirs.get("cpuacct")
        nanoseconds = _read_int(cpuacct / "cpuacct.usage") if cpuacct else None
        return nanoseconds / 1e9 if nanoseconds is not None else None

    def reset_peak(self) -> None:
        """Forget the previous job's peak and failure counts (a reused cgroup). Best
        effort: counters the kernel does not let us reset are compared as deltas."""
        memory = self.dirs["memory"]
        # A stale failcnt would make a later job's SIGKILL look like a memory kill.
        names = (
            ("memory.peak",)
            if self.version == 2
            else (
                "memory.max_usage_in_bytes",
                "memory.memsw.max_usage_in_bytes",
                "memory.failcnt",
                "memory.memsw.failcnt",
            )
        )
        for name in names:
            with contextlib.suppress(OSError):
                _write(memory / name, "0")

    def set_limits(self, limits: CgroupLimits) -> None:
        """Write the caps; OSError if the kernel refuses. Called at creation and again
        when a cgroup made ahead for a spare learns its run's limits (moving a process
        into a cgroup costs 7-23 ms on v1, so the spare is moved while nobody waits)."""
        if limits.memory_bytes <= 0 or limits.max_processes < 1 or limits.cpus <= 0:
            raise ValueError(f"bad cgroup limits {limits}")
        quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
        memory, pids, cpu = self.dirs["memory"], self.dirs["pids"], self.dirs["cpu"]
        if self.version == 2:
            _write(memory / "memory.max", str(limits.memory_bytes))
            for optional, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (memory / optional).exists():
                    _write(memory / optional, value)
            _write(pids / "pids.max", str(limits.max_processes))
            _write(cpu / "cpu.weight", "100")
            _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        # memsw must stay >= limit at every moment: raise memsw first, lower it last.
        limit_file = memory / "memory.limit_in_bytes"
        memsw_file = memory / "memory.memsw.limit_in_bytes"
        files = [limit_file, *([memsw_file] if memsw_file.exists() else [])]
        current = _read_int(limit_file) or 0
        for file in reversed(files) if limits.memory_bytes > current else files:
            _write(file, str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            _write(memory / "memory.swappiness", "0")
        _write(pids / "pids.max", str(limits.max_processes))
        _write(cpu / "cpu.shares", "1024")
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(quota))

    def usage(self) -> CgroupUsage:
        if self.version == 2:
            directory = self.dirs["memory"]
            events = _keyed(directory / "memory.events")
            usec = _keyed(directory / "cpu.stat").get("usage_usec")
            return CgroupUsage(
                oom_kills=max(events.get("oom_kill", 0), events.get("oom_group_kill", 0)),
                memory_limit_hits=events.get("max", 0),
                peak_memory_bytes=_read_int(directory / "memory.peak"),  # kernel >= 5.19
                cpu_seconds=usec / 1e6 if usec is not None else None,
            )
        memory = self.dirs["memory"]
        # oom_control's 'oom_kill' line exists on kernels >= 4.13 (0 before). failcnt
        # stayed 0 here (6.18) through an OOM kill, so a peak at the limit counts too.
        hits = [_read_int(memory / f) or 0 for f in ("memory.failcnt", "memory.memsw.failcnt")]
        peak = _read_int(memory / "memory.max_usage_in_bytes")
        limit = _read_int(memory / "memory.limit_in_bytes")
        if peak is not None and limit is not None and peak >= limit:
            hits.append(1)
        cpuacct = self.dirs.get("cpuacct")
        nanoseconds = _read_int(cpuacct / "cpuacct.usage") if cpuacct else None
        return CgroupUsage(
            oom_kills=_keyed(memory / "memory.oom_control").get("oom_kill", 0),
            memory_limit_hits=max(hits),
            peak_memory_bytes=peak,
            cpu_seconds=nanoseconds / 1e9 if nanoseconds is not None else None,
        )

    def kill_all(self) -> None:
        """SIGKILL every process of the run, waiting (at most 2 s) until none is listed."""
        kill_file = self.dirs["memory"] / "cgroup.kill" if self.version == 2 else None
        if not _kill_dirs(self.directories, kill_file):
            log.warning(
                "cgroup %s: processes left after %.0f s of SIGKILL", self.name, KILL_TIMEOUT
            )

    def remove(self) -> bool:
        """kill_all, then rmdir every directory; never raises, logs what it cannot remove.

        rmdir answers EBUSY until the killed processes have finished exiting, hence the
        retry (up to 1 s). True when no directory is left.
        """
        try:
            self.kill_all()
        except Exception:
            log.exception("cgroup %s: kill_all failed", self.name)
        removed = True
        for directory in self.directories:
            deadline = time.monotonic() + RMDIR_TIMEOUT
            while True:
                try:
                    _rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.005)
                        continue
                    log.warning("cgroup %s: cannot remove %s: %s", self.name, directory, error)
                    removed = False
                    break
        return removed


class CgroupSupport:
    """Cgroups usable for runs: `version` (1 or 2) and the parent directory per hierarchy."""

    def __init__(self, version: int, parents: dict[str, Path]) -> None:
        self.version = version
        self.parent_dirs = parents  # controller -> parent ("fmugw-sandbox") directory

    @property
    def parents(self) -> list[Path]:
        return list(dict.fromkeys(self.parent_dirs.values()))

    def _run(self, name: str) -> RunCgroup:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad run cgroup name {name!r}")
        dirs = {c: parent / f"{RUN_PREFIX}{name}" for c, parent in self.parent_dirs.items()}
        return RunCgroup(self.version, name, dirs)

    def reuse_or_create(self, name: str, limits: CgroupLimits) -> RunCgroup:
        """run-<name>, made with `limits` if it is not there, else as it is (empty:
        callers hold a lock per name); the caller writes the job's caps later. Making
        a memory cgroup took 12-33 ms on v1 here while other runs' cgroups were being
        removed, so a server's few jobs at a time reuse a few cgroups."""
        run = self._run(name)
        return run if run.exists() else self.create_run(name, limits)

    def create_run(self, name: str, limits: CgroupLimits) -> RunCgroup:
        """Make run-<name> with `limits`; CgroupUnavailable (nothing left behind) if refused."""
        if limits.memory_bytes <= 0 or limits.max_processes < 1 or limits.cpus <= 0:
            raise ValueError(f"bad cgroup limits {limits}")
        run = self._run(name)
        made: list[Path] = []
        try:
            for directory in run.directories:
                _mkdir(directory)
                made.append(directory)
            run.set_limits(limits)
        except OSError as error:
            for directory in made:
                with contextlib.suppress(OSError):
                    _rmdir(directory)
            raise CgroupUnavailable(f"cannot create run cgroup {name}: {error}") from error
        return run

    def sweep(self, *, owner_gone: bool = False, owner: int | None = None) -> int:
        """Kill and remove every leftover run-* cgroup (for server start); how many went.
        With owner_gone, only those named "<pid>-..." whose process (the monitor that
        made it) is gone: safe while other servers share the parent."""
        names: set[str] = set()
        for parent in self.parents:
            with contextlib.suppress(OSError):
                names.update(
                    entry.name[len(RUN_PREFIX) :]
                    for entry in os.scandir(parent)
                    if entry.is_dir() and entry.name.startswith(RUN_PREFIX)
                )
        removed = 0
        for name in sorted(names):
            if owner is not None:
                if name.split("-", 1)[0] != str(owner):
                    continue
            elif owner_gone and _owner_alive(name):
                continue
            try:
                run = self._run(name)
            except ValueError:
                log.warning("cgroup: leaving %s%s alone (unexpected name)", RUN_PREFIX, name)
                continue
            run.dirs = {c: d for c, d in run.dirs.items() if d.is_dir()}
            if not run.dirs:
                continue  # went away meanwhile
            run.dirs.setdefault("memory", next(iter(run.dirs.values())))
            removed += run.remove()
        return removed


def _owner_alive(name: str) -> bool:
    owner = name.split("-", 1)[0]
    return not owner.isdigit() or os.path.exists(f"/proc/{owner}")


# ---- detection and setup of the parent --------------------------------------------


def _enable_controllers(directory: Path, *, evacuate: bool) -> None:
    """+memory +pids +cpu in directory's subtree_control; moves its processes out if told."""
    control = directory / "cgroup.subtree_control"
    if set(V2_CONTROLLERS) <= {w.lstrip("+") for w in (_read(control) or "").split()}:
        return
    request = " ".join(f"+{c}" for c in V2_CONTROLLERS)
    try:
        _write(control, request)
        return
    except OSError as error:
        if error.errno != errno.EBUSY or not evacuate:
            raise
    leaf = directory / HOST_LEAF
    with contextlib.suppress(FileExistsError):
        _mkdir(leaf)
    for _ in range(20):
        pids = _pids(directory)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                _write(leaf / "cgroup.procs", str(pid))
    log.info("cgroup: moved the processes of %s into %s to enable controllers", directory, leaf)
    _write(control, request)


def _setup_v2(root: Path, parent_name: str, own: dict[str, str]) -> CgroupSupport:
    missing = set(V2_CONTROLLERS) - set((_read(root / "cgroup.controllers") or "").split())
    if missing:
        raise CgroupUnavailable(f"cgroup v2 at {root} lacks controllers {sorted(missing)}")
    base = _under(root, own.get("", "/"))
    missing = set(V2_CONTROLLERS) - set((_read(base / "cgroup.controllers") or "").split())
    if missing:
        raise CgroupUnavailable(f"controllers {sorted(missing)} not delegated to {base}")
    try:
        _enable_controllers(base, evacuate=True)
        parent = base / parent_name
        with contextlib.suppress(FileExistsError):
            _mkdir(parent)
        _enable_controllers(parent, evacuate=False)
    except OSError as error:
        raise CgroupUnavailable(f"cannot set up cgroup v2 under {base}: {error}") from error
    return CgroupSupport(2, dict.fromkeys(V2_CONTROLLERS, parent))


def _setup_v1(root: Path, parent_name: str, own: dict[str, str]) -> CgroupSupport:
    parents: dict[str, Path] = {}
    seen: dict[Path, Path] = {}  # real mount -> parent (cpu,cpuacct mounted together)
    for controller, marker in V1_HIERARCHIES.items():
        mount = root / controller
        if not (mount / "cgroup.procs").is_file():
            if controller == "cpuacct":
                continue  # optional: cpu_seconds is then None
            raise CgroupUnavailable(f"no cgroup v1 {controller} hierarchy at {mount}")
        real = mount.resolve()
        if real in seen:
            parents[controller] = seen[real]
            continue
        parent = _under(mount, own.get(controller, "/")) / parent_name
        try:
            with contextlib.suppress(FileExistsError):
                _mkdir(parent)
        except OSError as error:
            raise CgroupUnavailable(f"cannot create {parent}: {error}") from error
        if not (parent / marker).exists():
            raise CgroupUnavailable(f"{mount} is not a cgroup v1 {controller} hierarchy")
        parents[controller] = seen[real] = parent
    return CgroupSupport(1, parents)


def _detect(root: Path, parent_name: str) -> tuple[CgroupSupport | None, str]:
    own = _own_cgroups()
    try:
        if (root / "cgroup.controllers").is_file():
            return _setup_v2(root, parent_name, own), ""
        return _setup_v1(root, parent_name, own), ""
    except CgroupUnavailable as error:
        return None, str(error)


def detect_cgroups(
    root: Path = DEFAULT_ROOT, *, parent_name: str = PARENT_NAME
) -> CgroupSupport | None:
    """The cgroups runs can use, with the parent created and controllers enabled; None
    when neither v2 with memory+pids+cpu nor writable v1 memory+pids+cpu is there (see
    cgroup_unavailable_reason). Idempotent; meant for server start (then sweep())."""
    support, reason = _detect(root, parent_name)
    if support is None:
        log.info("cgroup: not used: %s", reason)
    return support


def cgroup_unavailable_reason(root: Path = DEFAULT_ROOT, *, parent_name: str = PARENT_NAME) -> str:
    """Why detect_cgroups(root) gives None; '' when cgroups are usable."""
    return _detect(root, parent_name)[1]
