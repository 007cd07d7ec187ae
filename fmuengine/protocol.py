"""The runner ↔ sandbox contract in one place: file names, commands, events, exit codes,
error codes, limits and isolation measures.

The runner (the unprivileged worker) and the sandbox server (root) are separate
processes, possibly started separately and talking over a unix socket, so everything
both sides must agree on lives here and nowhere else. Messages are JSON objects, one
per line.

Runner -> server:
    {"op": "run", "run_id", "run_dir", "uid", "gid", "model_key", "limits": {...},
     "first_case", "case_count"}                   the last two for a batch only
    {"op": "cancel", "run_id"}
Server -> runner:
    {"event": "ready", "isolation", "measures": [...], "missing": {measure: why}, "pid"}
    {"event": "started", "run_id", "pid"}          pid of the model process
    {"event": "progress", "run_id", "value"}       0..1, at most ~5 a second
    {"event": "case", "run_id", "index", "exit_code", "outputs", "cpu_seconds",
     "wall_seconds", "disk_full"}                 one case of a batch ended (see below)
    {"event": "finished", "run_id", **Finished fields}
    {"event": "error", "run_id", "message"}        the run could not be started

A run dir (made by the runner, owned by it) holds `model.fmu` and `params.json`, and an
empty `out/`; the sandbox copies what the model wrote (result, error report, log tail)
into `out/`, bounded in size, owned by the run dir's owner. Nothing the model writes is
ever on the host's disk otherwise: its writable dirs are a per-run tmpfs.

A batch (many cases of one model for one owner, see `fmuengine.batch`) is a run whose
params.json is {"cases": [params, ...]} and whose command names the first case this job
starts at. Its model process simulates the cases in order, each with a fresh FMU
instance, and marks each case's start and end on a pipe to its monitor, the end
followed by the case's result and error report; the monitor enforces the per-case limits
and stores each case's files (bounded like a run's copies) as soon as it ends: its
result appended to the job's `cases-<first case>.bin` (one file a job: creating and
removing a file per case cost ~0.3 ms on ext4), its error report and log part as
`case-<i>.error.json`, `case-<i>.log`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

# In the run dir on the host.
MODEL_FILE = "model.fmu"
PARAMS_FILE = "params.json"
OUT_DIR = "out"
# Written by the model into its /sandbox, copied by the sandbox into out/.
RESULT_FILE = "result.npy"
LOG_FILE = "fmu.log"
ERROR_FILE = "error.json"
EXTRACT_DIR = "fmu"
# Inside the model's view.
SANDBOX_MOUNT_POINT = "/sandbox"
MODEL_MOUNT_POINT = "/model"

# Exit codes of the model process.
REPORTED_FAILURE_EXIT_CODE = 113  # a clean failure, described in error.json
SETUP_FAILED_EXIT_CODE = 114  # the trusted setup before model code failed
# A batch's model process ended between cases so that the rest run in a fresh process.
BATCH_YIELD_EXIT_CODE = 115

# What the sandbox copies out of a run, at most.
MAX_ERROR_REPORT_BYTES = 4096
MAX_LOG_TAIL_BYTES = 64 * 1024

MAX_COMMAND_LINE_BYTES = 1 << 20
# The cases a batch may hold (params.json is read by the model process, not the server).
MAX_BATCH_CASES = 100_000
MAX_EVENT_LINE_BYTES = 64 * 1024


class RunErrorCode(enum.StrEnum):
    """Why a run did not succeed, as the API reports it. PLATFORM codes are refunded."""

    MODEL_ERROR = "model_error"
    MODEL_CRASHED = "model_crashed"
    MODEL_EXITED = "model_exited"
    INVALID_FMU = "invalid_fmu"
    INVALID_PARAMETERS = "invalid_parameters"
    INVALID_RESULT = "invalid_result"
    MEMORY_LIMIT = "memory_limit"
    DISK_LIMIT = "disk_limit"
    FILE_SIZE_EXCEEDED = "file_size_exceeded"
    CPU_TIME_EXCEEDED = "cpu_time_exceeded"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SANDBOX_FAILED = "sandbox_failed"  # the platform's fault: refunded


# Codes the model process may put in its own error.json (a label, never a verdict).
REPORTABLE_ERROR_CODES = frozenset(
    {
        RunErrorCode.MODEL_ERROR,
        RunErrorCode.MEMORY_LIMIT,
        RunErrorCode.INVALID_FMU,
        RunErrorCode.INVALID_PARAMETERS,
        RunErrorCode.FILE_SIZE_EXCEEDED,
        RunErrorCode.DISK_LIMIT,
    }
)


class Measure(enum.StrEnum):
    """One isolation measure the sandbox applies to every run."""

    NAMESPACES = "namespaces"  # mount, PID, net, IPC, UTS, cgroup namespaces; private root
    USER_NAMESPACES = "user-namespaces"  # the same, unprivileged, in a user namespace
    SETUID = "setuid"  # a uid of the run's own slot
    CGROUPS = "cgroups"  # memory (incl. tmpfs/memfd), pids and CPU caps per run
    DISK_QUOTA = "disk-quota"  # the run's writable dirs are a tmpfs of fixed size
    SECCOMP = "seccomp"  # syscall allowlist
    RLIMITS = "rlimits"


# What production requires ("full"): a worker below it takes no run.
FULL_ISOLATION = frozenset(
    {
        Measure.NAMESPACES,
        Measure.SETUID,
        Measure.CGROUPS,
        Measure.DISK_QUOTA,
        Measure.SECCOMP,
        Measure.RLIMITS,
    }
)
ISOLATION_LEVELS = {"full": FULL_ISOLATION, "none": frozenset()}


def describe_measures(measures: frozenset[str] | set[str]) -> str:
    order = [measure.value for measure in Measure]
    present = [name for name in order if name in measures]
    return "+".join(present) if present else "none"


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run. `memory_bytes` caps the whole run (every process,
    and the memory of its files: tmpfs, memfd, pipes); `disk_bytes` caps what it can
    write; `file_size_bytes` caps one file (and so the result)."""

    cpu_seconds: float
    memory_bytes: int
    file_size_bytes: int
    max_processes: int
    wall_timeout_seconds: float
    disk_bytes: int = 1 << 30
    cpus: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxLimits:
        return cls(
            cpu_seconds=float(data["cpu_seconds"]),
            memory_bytes=int(data["memory_bytes"]),
            file_size_bytes=int(data["file_size_bytes"]),
            max_processes=int(data["max_processes"]),
            wall_timeout_seconds=float(data["wall_timeout_seconds"]),
            disk_bytes=int(data.get("disk_bytes", 1 << 30)),
            cpus=float(data.get("cpus", 1.0)),
        )


@dataclass(frozen=True)
class RunCommand:
    """One run as the server receives it."""

    run_id: str
    run_dir: str  # on the host: model.fmu, params.json, out/
    uid: int
    gid: int
    limits: SandboxLimits
    model_key: str | None = None  # sha256 of model.fmu, computed by the runner
    # A batch: the case this job starts at, and how many cases params.json holds.
    first_case: int | None = None
    case_count: int = 0

    @property
    def batch(self) -> bool:
        return self.first_case is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "run",
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "uid": self.uid,
            "gid": self.gid,
            "model_key": self.model_key,
            "limits": self.limits.to_json(),
            "first_case": self.first_case,
            "case_count": self.case_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunCommand:
        first_case = data.get("first_case")
        case_count = int(data.get("case_count") or 0)
        if first_case is not None:
            first_case = int(first_case)
            if not 0 <= first_case < case_count <= MAX_BATCH_CASES:
                raise ValueError("the batch's first case is not one of its cases")
        return cls(
            run_id=str(data["run_id"]),
            run_dir=str(data["run_dir"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            limits=SandboxLimits.from_json(data["limits"]),
            model_key=str(data["model_key"]) if data.get("model_key") else None,
            first_case=first_case,
            case_count=case_count if first_case is not None else 0,
        )


def batch_results_file(first_case: int) -> str:
    """The job's results file in out/: each case's result.npy appended (at a multiple of
    4096, so that the runner can free what it read), its place in the case's event."""
    return f"cases-{int(first_case)}.bin"


RESULTS_ALIGNMENT = 4096


def case_file(index: int, suffix: str) -> str:
    """A batch case's file name, in the model's dir and in out/: suffix "npy" (its
    result), "error.json" (its own account of a failure) or "log" (its part of fmu.log)."""
    return f"case-{int(index)}.{suffix}"
