"""One job's processes: the monitor and the model process it forks.

    zygote ── monitor (fork; root; unshares mount, PID, net, IPC, UTS, cgroup namespaces;
              │         mounts the job's scratch tmpfs; puts the model process in the
              │         job's cgroup; waits for it; copies what it wrote out, bounded)
              └─ model process (fork; PID 1 of the new PID namespace; a mount namespace
                 of its own with the private root of jail.py; then the slot uid,
                 rlimits, no_new_privs, seccomp, and the job: simulate or prepare)

Both are forked ahead of their job (a "spare"): everything that is the same for every
job (namespaces, mounts) is done while no job waits. They are forked by the zygote,
which has never seen a command, so they inherit no byte of any tenant's data; they
learn their one job from the server over a pipe only when it is theirs.

The monitor's report (exit status and rusage from wait4, the cgroup's OOM kills, whether
the scratch is full) is trusted because no model code runs in it; the model process's
own words (error.json, progress) are not.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import select
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from fmuengine.fsutil import copy_file_out, copy_tree_out, remove_tree
from fmuengine.protocol import (
    ERROR_FILE,
    LOG_FILE,
    MAX_ERROR_REPORT_BYTES,
    MAX_LOG_TAIL_BYTES,
    MODEL_FILE,
    OUT_DIR,
    PARAMS_FILE,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
    SETUP_FAILED_EXIT_CODE,
    SandboxLimits,
)
from fmuengine.sandbox import jail, seccomp, simulate
from fmuengine.sandbox.cases import CaseTracker, open_tracker
from fmuengine.sandbox.cgroups import CgroupLimits, CgroupSupport, RunCgroup
from fmuengine.sandbox.isolation import (
    ISOLATION_NAMESPACES,
    ISOLATION_NONE,
    ISOLATION_SETUID,
    ISOLATION_USER_NAMESPACES,
)

JOB_RUN = "run"
JOB_PREPARE = "prepare"
WORK_DIR = "work"  # the model's writable dir on the host, without a mount namespace
# Below this much free space (or no free inode) the scratch counts as full.
SCRATCH_FULL_MARGIN_BYTES = 1 << 20
PREPARED_MAX_DEPTH = 64
PREPARED_MAX_ENTRIES = 20_000
OOM_POLL_MILLISECONDS = 100
GO = b"g"  # monitor -> model process: the job's limits are in place
# A spare's cgroup until its job's caps arrive (it runs no model code before then).
SPARE_CGROUP_LIMITS = CgroupLimits(memory_bytes=512 << 20, max_processes=4, cpus=1.0)


@dataclass(frozen=True)
class JailSetup:
    """How every job of one server is isolated: fixed at server start, before any
    command is read, and inherited by the zygote."""

    mode: str
    library_dirs: list[str]
    root_point: str | None = None  # an empty host dir each spare mounts its root on
    scratch_point: str | None = None  # an empty host dir each spare mounts its tmpfs on
    cgroups: CgroupSupport | None = None
    seccomp: bool = False
    # Lock files of the server's reusable job cgroups, named "<server pid>-pool<k>".
    cgroup_pool_dir: str | None = None
    server_pid: int = 0

    @property
    def namespaces(self) -> bool:
        return self.mode in (ISOLATION_NAMESPACES, ISOLATION_USER_NAMESPACES)


@dataclass
class Job:
    """A spare's assignment, as the server writes it to the spare's request pipe."""

    kind: str
    run_dir: str
    uid: int
    gid: int
    limits: SandboxLimits
    prepared_dir: str | None = None
    model_key: str | None = None
    target_dir: str | None = None  # prepare: where the monitor copies the prepared tree
    first_case: int | None = None  # a batch: the case this job starts at
    case_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def process_limits(self) -> SandboxLimits:
        """The model process's rlimits: a batch's CPU rlimit is the sum of its cases'
        (it is per process; each case's own CPU time is enforced by its monitor)."""
        if self.first_case is None:
            return self.limits
        cases = max(1, self.case_count - self.first_case)
        return replace(self.limits, cpu_seconds=self.limits.cpu_seconds * cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_dir": self.run_dir,
            "uid": self.uid,
            "gid": self.gid,
            "limits": self.limits.to_json(),
            "prepared_dir": self.prepared_dir,
            "model_key": self.model_key,
            "target_dir": self.target_dir,
            "first_case": self.first_case,
            "case_count": self.case_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            kind=str(data["kind"]),
            run_dir=str(data["run_dir"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            limits=SandboxLimits.from_json(data["limits"]),
            prepared_dir=data.get("prepared_dir"),
            model_key=data.get("model_key"),
            target_dir=data.get("target_dir"),
            first_case=None if data.get("first_case") is None else int(data["first_case"]),
            case_count=int(data.get("case_count") or 0),
        )


def write_line(fd: int, message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_line(fd: int) -> bytes | None:
    """One line from a pipe written all at once by a trusted process; None at EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    return data


# ---- the model process ---------------------------------------------------------------


def _model_process(setup: JailSetup, fds: dict[str, int]) -> NoReturn:
    try:
        job, params, progress_fd = _confine(setup, fds)
        os.write(fds["setup_w"], b"ok")
        os.close(fds["setup_w"])
        # The monitor sizes the scratch and writes the cgroup's caps while this process
        # confines itself; no model code runs before it says "go".
        _wait_for_go(fds)
    except BaseException as error:
        try:
            os.write(fds["setup_w"], f"{type(error).__name__}: {error}"[:2000].encode())
        finally:
            os._exit(SETUP_FAILED_EXIT_CODE)
    # From here on model code runs in this process: nothing it says is trusted.
    try:
        if job.kind == JOB_PREPARE:
            assert job.model_key is not None
            code = simulate.prepare_model(job.model_key)
        elif job.first_case is not None:
            code = simulate.simulate_cases(
                params,
                job.first_case,
                fds["case_w"],
                prepared=job.prepared_dir is not None,
            )
        else:
            code = simulate.simulate_in_sandbox(
                params, progress_fd, prepared=job.prepared_dir is not None
            )
    except BaseException:
        traceback.print_exc()
        code = REPORTED_FAILURE_EXIT_CODE
    os._exit(code)


def _wait_for_go(fds: dict[str, int]) -> None:
    """Block until the monitor has the job's dirs and caps in place (once)."""
    if "go_r" not in fds:
        return
    if os.read(fds["go_r"], 1) != GO:
        os._exit(SETUP_FAILED_EXIT_CODE)
    os.close(fds.pop("go_r"))


def _confine(setup: JailSetup, fds: dict[str, int]) -> tuple[Job, dict[str, Any], int]:
    """The trusted part of the model process: what is the same for every job first,
    then wait for the job, then the job's own view, privileges, limits and filter."""
    os.setsid()  # own process group: the model cannot signal the server's group
    os.umask(0o022)
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)  # while it waits, as root
    if setup.namespaces:
        assert setup.root_point is not None and setup.scratch_point is not None
        # A mount namespace of its own: pivot_root below moves only this process.
        jail.unshare(jail.CLONE_NEWNS)
        jail.build_private_root(
            setup.root_point,
            setup.scratch_point,
            setup.library_dirs,
            in_user_namespace=setup.mode == ISOLATION_USER_NAMESPACES,
        )
    os.write(fds["ns_w"], b"r")  # the monitor may now hold on to this mount namespace
    os.close(fds.pop("ns_w"))
    line = read_line(fds["job_r"])
    if line is None:
        os._exit(0)  # not needed: the spare is discarded
    os.close(fds.pop("job_r"))
    job = Job.from_json(json.loads(line))
    if setup.namespaces:
        jail.unshare(jail.CLONE_NEWCGROUP)  # now in the run's cgroup: that is its root
    params: dict[str, Any] = {}
    if job.kind == JOB_RUN:
        with open(os.path.join(job.run_dir, PARAMS_FILE), "rb") as stream:
            params = json.load(stream)

    if setup.namespaces:
        assert setup.root_point is not None
        jail.finish_private_root(
            setup.root_point, os.path.join(job.run_dir, MODEL_FILE), job.prepared_dir
        )
        jail.sethostname(b"sandbox")
    else:
        _wait_for_go(fds)
        os.chdir(os.path.join(job.run_dir, WORK_DIR))
        shutil.copyfile(os.path.join(job.run_dir, MODEL_FILE), MODEL_FILE)
        if setup.mode == ISOLATION_SETUID:
            os.chown(MODEL_FILE, job.uid, job.gid)
    log_fd = os.open(LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    kept = ("progress_w", "setup_w", "lifeline_r", "go_r", "case_w")
    if job.first_case is None:
        os.close(fds.pop("case_w"))  # only a batch marks its cases
    names = [name for name in kept if name in fds]
    arranged = jail.arrange_descriptors(log_fd, [fds[name] for name in names])
    fds.update(zip(names, arranged, strict=True))
    progress_fd, lifeline_fd = fds["progress_w"], fds["lifeline_r"]
    os.set_blocking(progress_fd, False)
    jail.apply_rlimits(job.process_limits)

    if setup.mode in (ISOLATION_NAMESPACES, ISOLATION_SETUID):
        os.setgroups([])
        os.setresgid(job.gid, job.gid, job.gid)
        os.setresuid(job.uid, job.uid, job.uid)  # clears all capabilities
    elif setup.mode == ISOLATION_USER_NAMESPACES:
        jail.drop_all_capabilities()
    jail.prctl(jail.PR_SET_NO_NEW_PRIVS, 1)
    # Set after the uid change, which clears it. If the monitor died before this, its
    # end of the lifeline pipe is closed and the pipe reads as ready (EOF).
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    readable, _, _ = select.select([lifeline_fd], [], [], 0)
    if readable:
        os._exit(SETUP_FAILED_EXIT_CODE)
    if setup.seccomp:
        seccomp.install_seccomp_filter()
    os.environ.clear()
    os.close(lifeline_fd)
    return job, params, progress_fd


# ---- the monitor ----------------------------------------------------------------------


def run_monitor(setup: JailSetup, fds: dict[str, int]) -> NoReturn:
    """A spare's monitor: build the namespaces and scratch, fork the model process,
    wait for the job, start it, wait for its end and report. `fds`: status_w,
    progress_w (the model's progress, straight to the server) and request_r."""
    try:
        jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
        null_fd = os.open("/dev/null", os.O_RDWR)
        os.dup2(null_fd, 0)
        os.dup2(null_fd, 1)
        os.close(null_fd)
        jail.close_descriptors_except({2, *fds.values()})
        # The cgroup namespace comes later, in the model process, once it is in its
        # run's cgroup (cgroup v2 refuses moves across a namespace's root).
        namespaces = jail.RUN_NAMESPACES & ~jail.CLONE_NEWCGROUP
        if setup.mode == ISOLATION_NAMESPACES:
            jail.unshare(namespaces)
        elif setup.mode == ISOLATION_USER_NAMESPACES:
            uid, gid = os.geteuid(), os.getegid()
            jail.unshare(jail.CLONE_NEWUSER | namespaces)
            jail.write_user_namespace_maps(uid, gid)
        if setup.namespaces:
            assert setup.scratch_point is not None
            jail.mount(None, "/", None, jail.MS_REC | jail.MS_PRIVATE, None)
            jail.mount_scratch(setup.scratch_point, 1 << 20)
        # case: a batch's markers and case files (model process -> monitor)
        for name in ("setup", "lifeline", "go", "ns", "case"):
            fds[f"{name}_r"], fds[f"{name}_w"] = os.pipe()
        pid = os.fork()
        if pid == 0:
            for name in MONITOR_ENDS:
                os.close(fds.pop(name))
            _model_process(setup, fds)
        for name in MODEL_ENDS:
            os.close(fds.pop(name))
        cgroup = None
        if setup.cgroups is not None:
            # Taken and joined now, while no job waits: moving a process into a cgroup
            # took 7-23 ms on cgroup v1 here. The job's own caps are written later.
            cgroup = _take_cgroup(setup)
            cgroup.add(pid)
        _monitor_job(setup, fds, pid, cgroup)
    except BaseException as error:
        with contextlib.suppress(BaseException):
            write_line(fds["status_w"], {"monitor_error": f"{type(error).__name__}: {error}"})
        os._exit(1)
    os._exit(0)


# The pipe ends each side of the fork closes (the other side's).
MONITOR_ENDS = ("status_w", "request_r", "setup_r", "lifeline_w", "go_w", "ns_r", "case_r")
MODEL_ENDS = ("progress_w", "setup_w", "lifeline_r", "job_r", "go_r", "ns_w", "case_w")
CGROUP_POOL_SIZE = 4  # a server has at most a running job, a preparation and a spare


def _take_cgroup(setup: JailSetup) -> RunCgroup:
    """One of the server's reusable cgroups (flocked by this monitor until it exits:
    the lock goes with the process), or a cgroup of its own when none is free."""
    assert setup.cgroups is not None
    if setup.cgroup_pool_dir is not None:
        for number in range(CGROUP_POOL_SIZE):
            path = os.path.join(setup.cgroup_pool_dir, f"{number}.lock")
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            name = f"{setup.server_pid}-pool{number}"
            return setup.cgroups.reuse_or_create(name, SPARE_CGROUP_LIMITS)
    return setup.cgroups.create_run(f"{os.getpid()}-{os.urandom(3).hex()}", SPARE_CGROUP_LIMITS)


def _pooled(cgroup: RunCgroup) -> bool:
    return "-pool" in cgroup.name


def _monitor_job(setup: JailSetup, fds: dict[str, int], pid: int, cgroup: RunCgroup | None) -> None:
    line = read_line(fds["request_r"])
    if line is None:  # the server discards this spare
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if cgroup is not None and not _pooled(cgroup):
            cgroup.remove()
        return
    os.close(fds.pop("request_r"))
    job = Job.from_json(json.loads(line))
    baseline: tuple[int, float | None] | None = None
    tracker: CaseTracker | None = None
    model_namespace = _hold_mount_namespace(pid, fds.pop("ns_r"))
    try:
        # The model process got the same job from the server and confines itself
        # meanwhile; without namespaces it waits for "go" before it enters its dir.
        work = _prepare_work_dir(setup, job)
        if cgroup is not None:
            cgroup.set_job_limits(
                CgroupLimits(
                    memory_bytes=job.limits.memory_bytes,
                    max_processes=job.limits.max_processes,
                    cpus=job.limits.cpus,
                )
            )
            cgroup.reset_peak()
            baseline = (cgroup.oom_kills(), cgroup.cpu_seconds())
        os.write(fds["go_w"], GO)
        os.close(fds.pop("go_w"))
        write_line(fds["status_w"], {"pid": pid})
        if job.first_case is not None:
            tracker = open_tracker(
                job,
                pid,
                cgroup,
                work,
                status=functools.partial(write_line, fds["status_w"]),
                disk_full=functools.partial(_scratch_full, setup, work),
            )
        _, status, usage = _wait(pid, cgroup, baseline, tracker, fds["case_r"])
        report: dict[str, Any] = {
            "status": status,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_bytes": usage.ru_maxrss * 1024,
        }
        if cgroup is not None and baseline is not None:
            cgroup.kill_all()  # what the model left (with a PID namespace: nothing)
            measured = cgroup.usage()
            report["oom_kills"] = measured.oom_kills - baseline[0]
            report["memory_limit_hits"] = measured.memory_limit_hits
            if measured.cpu_seconds is not None and baseline[1] is not None:
                report["cpu_seconds"] = max(
                    report["cpu_seconds"], measured.cpu_seconds - baseline[1]
                )
        elif setup.mode == ISOLATION_NONE:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # its process group (it called setsid)
        report["disk_full"] = _scratch_full(setup, work)
        if tracker is not None:
            report.update(tracker.finish())
        succeeded = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        report.update(_copy_out(job, work, exited_cleanly=succeeded))
        os.set_blocking(fds["setup_r"], False)
        try:
            report["setup"] = os.read(fds["setup_r"], 4096).decode(errors="replace")
        except BlockingIOError:
            report["setup"] = ""
        write_line(fds["status_w"], report)
    finally:
        if tracker is not None:
            tracker.close()
        if cgroup is not None:
            if _pooled(cgroup):
                cgroup.kill_all()
            else:
                cgroup.remove()
        if not setup.namespaces:
            remove_tree(os.path.join(job.run_dir, WORK_DIR))
        if model_namespace >= 0:
            os.close(model_namespace)  # its teardown, now that the report is out


def _wait(
    pid: int,
    cgroup: RunCgroup | None,
    baseline: tuple[int, float | None] | None,
    tracker: CaseTracker | None = None,
    case_fd: int = -1,
) -> tuple[int, int, Any]:
    """wait4 the model process; meanwhile, an OOM kill in its cgroup ends the whole run
    at once (cgroup v1 kills one process only, and a model whose child was killed could
    otherwise wait for it until the wall-clock limit), and a batch's cases are followed
    (their markers read, their limits enforced, their files copied out)."""
    if cgroup is not None or tracker is not None:
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if tracker is not None:
                poller.register(case_fd, select.POLLIN)
            timeout = OOM_POLL_MILLISECONDS
            next_oom_check = 0.0
            while True:
                ready = dict(poller.poll(timeout))
                if tracker is not None:
                    if case_fd in ready and not tracker.read(case_fd):
                        poller.unregister(case_fd)
                    timeout = int(tracker.enforce() * 1000) + 1
                if pidfd in ready:
                    break
                now = time.monotonic()
                if cgroup is not None and now >= next_oom_check:
                    next_oom_check = now + OOM_POLL_MILLISECONDS / 1000
                    if cgroup.oom_kills() > (baseline[0] if baseline else 0):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)  # PID 1 of the run: all of it
                        break
            if tracker is not None:  # the last markers, written before it ended
                os.set_blocking(case_fd, False)
                while tracker.killed_by is None and tracker.read(case_fd):
                    if not select.select([case_fd], [], [], 0)[0]:
                        break
        finally:
            os.close(pidfd)
    return os.wait4(pid, 0)


def _hold_mount_namespace(pid: int, ready_fd: int) -> int:
    """An fd of the model process's own mount namespace (-1 if it has none), so that
    the namespace outlives the process: tearing it down waits for an RCU grace period
    (14 ms of a small run's latency here, between the model's exit and wait4), which
    then happens after the report, when the monitor exits."""
    try:
        if os.read(ready_fd, 1) != b"r":
            return -1
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    finally:
        os.close(ready_fd)


def _prepare_work_dir(setup: JailSetup, job: Job) -> str:
    """The model's writable dir, seen from here: the scratch tmpfs's sandbox dir, sized
    for this job; or, without a mount namespace, a dir in the run dir on the host."""
    if setup.namespaces:
        assert setup.scratch_point is not None
        jail.resize_scratch(setup.scratch_point, job.limits.disk_bytes)
        if setup.mode == ISOLATION_NAMESPACES:
            for name in (jail.SCRATCH_SANDBOX, jail.SCRATCH_TMP):
                os.chown(os.path.join(setup.scratch_point, name), job.uid, job.gid)
        return os.path.join(setup.scratch_point, jail.SCRATCH_SANDBOX)
    work = os.path.join(job.run_dir, WORK_DIR)
    os.mkdir(work, 0o700)
    if setup.mode == ISOLATION_SETUID:
        os.chown(work, job.uid, job.gid)
    return work


def _scratch_full(setup: JailSetup, work: str) -> bool:
    if not setup.namespaces:
        return False
    try:
        info = os.statvfs(work)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < SCRATCH_FULL_MARGIN_BYTES or info.f_favail == 0


def _copy_out(job: Job, work: str, *, exited_cleanly: bool) -> dict[str, Any]:
    """Copy what the model wrote to the host, bounded: for a run its result, error
    report and log tail into out/ (owned like out/); for a preparation the tree."""
    try:
        work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return {"outputs": {}}
    try:
        if job.kind == JOB_PREPARE:
            return {"prepared": exited_cleanly and _copy_prepared(job, work_fd)}
        out_fd = os.open(
            os.path.join(job.run_dir, OUT_DIR), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        )
        try:
            info = os.fstat(out_fd)
            owner = (info.st_uid, info.st_gid)
            outputs = {
                RESULT_FILE: copy_file_out(
                    work_fd, RESULT_FILE, out_fd, max_bytes=job.limits.file_size_bytes, owner=owner
                ),
                ERROR_FILE: copy_file_out(
                    work_fd, ERROR_FILE, out_fd, max_bytes=MAX_ERROR_REPORT_BYTES + 1, owner=owner
                ),
                LOG_FILE: copy_file_out(
                    work_fd, LOG_FILE, out_fd, max_bytes=MAX_LOG_TAIL_BYTES, tail=True, owner=owner
                ),
            }
        finally:
            os.close(out_fd)
        return {"outputs": outputs}
    finally:
        os.close(work_fd)


def _copy_prepared(job: Job, work_fd: int) -> bool:
    assert job.target_dir is not None
    try:
        prepared_fd = os.open(
            simulate.PREPARED_OUTPUT_DIR,
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
            dir_fd=work_fd,
        )
    except OSError:
        return False
    try:
        copy_tree_out(
            prepared_fd,
            job.target_dir,
            max_depth=PREPARED_MAX_DEPTH,
            max_entries=PREPARED_MAX_ENTRIES,
            max_bytes=job.limits.disk_bytes,
        )
        return True
    except (OSError, ValueError):
        remove_tree(job.target_dir)
        return False
    finally:
        os.close(prepared_fd)
