"""The monitor's side of a batch job: per-case limits and per-case copies out.

A batch job's model process (simulate.simulate_cases) runs many cases of one model for
one owner, and writes "s <i>" when case i starts and "e <i> <exit code> <result bytes>
<error report bytes> <fmu.log size>" when it ends, followed by the result and the error
report themselves, on a pipe to its monitor (taken out of its dir before the next case's
code runs: no case can touch another's files, and the process never waits for us).
Those markers are the model process's words, written from the process the model's code
runs in, so they are read as untrusted: case numbers must come in order (each case
starts once, after the previous one ended, and ends once); a marker out of its place
ends the job as a protocol violation (charged to the model, like any invalid output:
the case it ran is `invalid_result`); lines that are no marker (junk a model wrote on
every descriptor it has) are skipped. The most a lying model can do is mislabel the
cases of its own batch: same owner, same model.

What is enforced here, from outside the jail (no model code runs in the monitor):

- each case's wall-clock limit: a rolling deadline, reset when a case starts or ends,
  so a case hanging past `wall_timeout_seconds` is killed (the whole job: the runner
  records `timeout` for that case and continues with the next in a fresh job);
- each case's CPU time, measured on the job's cgroup (RLIMIT_CPU is per process, and
  the process serves many cases: it is set to the sum and only a backstop);
- what each case leaves: its result and error report are stored in out/, bounded like
  a single run's copies (a result over the file size limit is read and dropped), with
  the part of fmu.log written while it ran. Results are appended to one file per job,
  each at a multiple of 4096 bytes: the runner frees each range once it read it, so
  the host's disk holds only the results not read yet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmuengine.fsutil import open_regular
from fmuengine.protocol import (
    LOG_FILE,
    MAX_ERROR_REPORT_BYTES,
    MAX_LOG_TAIL_BYTES,
    OUT_DIR,
    RESULTS_ALIGNMENT,
    batch_results_file,
    case_file,
)
from fmuengine.sandbox.cgroups import RunCgroup

if TYPE_CHECKING:
    from fmuengine.sandbox.monitor import Job

MAX_MARKER_BYTES = 64  # "e <index> <code>\n" is far shorter
KILLED_TIMEOUT = "timeout"
KILLED_CPU = "cpu_time"
KILLED_PROTOCOL = "protocol"


@dataclass
class _Ending:
    """A case whose end marker came: its files follow on the pipe, in this order."""

    index: int
    exit_code: int
    result_left: int
    error_left: int
    log_size: int
    result: str = "absent"  # copied | too_large | absent
    at: int = 0
    result_done: int = 0
    error: bytes = b""


class CpuCounter:
    """The job cgroup's CPU time, read per case and per check: its file opened once and
    read with pread (opening and reading it each time cost ~70 µs here)."""

    def __init__(self, cgroup: RunCgroup | None) -> None:
        self.fd = -1
        self.version = 0
        if cgroup is None:
            return
        self.version = cgroup.version
        if cgroup.version == 2:
            path = cgroup.dirs["cpu"] / "cpu.stat"
        elif "cpuacct" in cgroup.dirs:
            path = cgroup.dirs["cpuacct"] / "cpuacct.usage"
        else:
            return
        with contextlib.suppress(OSError):
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def seconds(self) -> float | None:
        if self.fd < 0:
            return None
        try:
            text = os.pread(self.fd, 4096, 0)
            if self.version == 2:
                for line in text.splitlines():
                    if line.startswith(b"usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int(text) / 1e9
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CaseTracker:
    """One batch job's cases as its monitor follows them (see the module docstring)."""

    def __init__(
        self,
        *,
        pid: int,
        first_case: int,
        case_count: int,
        wall_timeout: float,
        cpu_limit: float,
        cgroup: RunCgroup | None,
        work_fd: int,
        out_fd: int,
        owner: tuple[int, int],
        file_size_bytes: int,
        status: Callable[[dict[str, Any]], None],  # gets each ended case's report
        disk_full: Callable[[], bool],
    ) -> None:
        self.pid = pid
        self.next_case = first_case
        self.case_count = case_count
        self.wall_timeout = wall_timeout
        self.cpu_limit = cpu_limit
        self.cpu = CpuCounter(cgroup)
        self.work_fd = work_fd
        self.out_fd = out_fd
        self.owner = owner
        self.file_size_bytes = file_size_bytes
        self.status = status
        self.disk_full = disk_full
        self.current: int | None = None
        self.buffer = b""
        self.killed_by: str | None = None
        self.log_offset = 0
        self.log_fd = -1  # fmu.log, opened once it exists (the model's stdout and stderr)
        self.first_case = first_case
        self.results_fd = -1  # the job's results file in out/, made with the first result
        self.results_end = 0
        self.ending: _Ending | None = None  # the case whose files are coming
        now = time.monotonic()
        # Until the first case starts: reading the model counts like a case.
        self.deadline = now + wall_timeout
        self.case_started = now
        self.case_cpu_start = self._cpu()

    def _cpu(self) -> float | None:
        return self.cpu.seconds()

    def _case_cpu(self) -> float:
        now, start = self._cpu(), self.case_cpu_start
        return max(0.0, now - start) if now is not None and start is not None else 0.0

    # ---- markers ---------------------------------------------------------------------

    def read(self, fd: int) -> bool:
        """Read what the model process wrote; False at end of file."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.buffer += chunk
        while self.killed_by is None:
            if self.ending is not None:  # a case's files follow its end marker
                if not self.buffer or not self._take_payload():
                    break
                continue
            if b"\n" not in self.buffer:
                break
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._marker(line)
        if self.ending is None and len(self.buffer) > MAX_MARKER_BYTES:
            self.buffer = b""  # a long line is junk, not a marker
        return True

    def _marker(self, line: bytes) -> None:
        """One line: a marker in its place, or the end of the job. Lines that are no
        marker at all (junk the model wrote on the pipe) are skipped: a case's output
        never ends the job unless it forges a marker."""
        parts = line.split()
        if (
            not parts
            or parts[0] not in (b"s", b"e")
            or len(parts) != (2 if parts[0] == b"s" else 6)
        ):
            return
        try:
            numbers = [int(part) for part in parts[1:]]
        except ValueError:
            return
        if (
            parts[0] == b"s"
            and numbers[0] == self.next_case
            and self.current is None
            and self.next_case < self.case_count
        ):
            self.current = self.next_case
            self.case_started = time.monotonic()
            self.deadline = self.case_started + self.wall_timeout
            self.case_cpu_start = self._cpu()
        elif (
            parts[0] == b"e"
            and numbers[0] == self.current
            and 0 <= numbers[1] < 256
            and min(numbers[2:]) >= 0
        ):
            index, exit_code, result_bytes, error_bytes, log_size = numbers
            self.ending = _Ending(index, exit_code, result_bytes, error_bytes, log_size)
            if exit_code == 0 and result_bytes > self.file_size_bytes:
                self.ending.result = "too_large"
            elif exit_code == 0:
                try:
                    self.ending.at = self._result_offset()
                    self.ending.result = "copied"
                except OSError:
                    pass  # "absent": the case's bytes are read and dropped
            if not result_bytes + error_bytes:
                self._ended()
        else:
            self.kill(KILLED_PROTOCOL)

    def _result_offset(self) -> int:
        """Where the next result goes in the results file (made with the first one)."""
        if self.results_fd < 0:
            self.results_fd = os.open(
                batch_results_file(self.first_case),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.out_fd,
            )
            os.fchown(self.results_fd, *self.owner)
        return -(-self.results_end // RESULTS_ALIGNMENT) * RESULTS_ALIGNMENT

    def _take_payload(self) -> bool:
        """Consume the ending case's bytes from the buffer: its result (appended to the
        results file, or dropped when too large), then its error report (kept up to
        one byte over the limit, as a run's copy is). True when the case is complete."""
        ending = self.ending
        assert ending is not None
        if ending.result_left:
            piece = self.buffer[: ending.result_left]
            self.buffer = self.buffer[len(piece) :]
            if ending.result == "copied":
                written = os.pwrite(self.results_fd, piece, ending.at + ending.result_done)
                if written != len(piece):
                    ending.result = "absent"
            ending.result_done += len(piece)
            ending.result_left -= len(piece)
        if not ending.result_left and ending.error_left:
            piece = self.buffer[: ending.error_left]
            self.buffer = self.buffer[len(piece) :]
            ending.error += piece[: MAX_ERROR_REPORT_BYTES + 1 - len(ending.error)]
            ending.error_left -= len(piece)
        if ending.result_left or ending.error_left:
            return False
        self._ended()
        return True

    def _ended(self) -> None:
        ending, self.ending = self.ending, None
        assert ending is not None
        now = time.monotonic()
        outputs: dict[str, Any] = {"log": self._copy_log(ending.index, ending.log_size)}
        if ending.exit_code == 0:
            outputs.update(npy=ending.result, at=ending.at, bytes=ending.result_done)
            if ending.result == "copied":
                self.results_end = ending.at + ending.result_done
        else:
            outputs["error.json"] = self._write_error(ending.index, ending.error)
        report: dict[str, Any] = {
            "case": ending.index,
            "exit_code": ending.exit_code,
            "cpu_seconds": self._case_cpu(),
            "wall_seconds": now - self.case_started,
            "outputs": outputs,
            "disk_full": ending.exit_code != 0 and self.disk_full(),
        }
        self.current = None
        self.next_case = ending.index + 1
        self.deadline = now + self.wall_timeout  # the way to the next case's start
        self.case_started = now
        self.case_cpu_start = self._cpu()
        self.status(report)

    def _write_error(self, index: int, data: bytes) -> str:
        if not data:
            return "absent"
        try:
            target = os.open(
                case_file(index, "error.json"),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.out_fd,
            )
            try:
                os.fchown(target, *self.owner)
                os.write(target, data)
            finally:
                os.close(target)
            return "copied"
        except OSError:
            return "absent"

    def _copy_log(self, index: int, end: int | None = None) -> str:
        """The part of fmu.log written since the last case ended (its last 64 KiB). The
        file is the one the model process's stdout and stderr were opened on: kept open
        once found (a model that renames or replaces it only hides its own log)."""
        if self.log_fd < 0:
            self.log_fd = open_regular(self.work_fd, LOG_FILE) or -1
            if self.log_fd < 0:
                return "absent"
        try:
            size = os.fstat(self.log_fd).st_size
            if end is not None:  # where the model process says the case's part ends
                size = min(size, end)
            if size < self.log_offset:  # truncated by the model
                self.log_offset = 0
            start = max(self.log_offset, size - MAX_LOG_TAIL_BYTES)
            self.log_offset = size
            if size <= start:
                return "absent"
            data = os.pread(self.log_fd, size - start, start)
            target = os.open(
                case_file(index, "log"),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.out_fd,
            )
            try:
                os.fchown(target, *self.owner)
                os.write(target, data)
            finally:
                os.close(target)
            return "copied"
        except OSError:
            return "absent"

    def close(self) -> None:
        self.cpu.close()
        for fd in (self.work_fd, self.out_fd, self.log_fd, self.results_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ---- limits ----------------------------------------------------------------------

    def kill(self, reason: str) -> None:
        if self.killed_by is None:
            self.killed_by = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)  # PID 1 of the job: all of it

    def enforce(self) -> float:
        """Kill the job when its case passed a limit; seconds until the next check."""
        if self.killed_by is not None:
            return 0.1
        now = time.monotonic()
        if now >= self.deadline:
            self.kill(KILLED_TIMEOUT)
            return 0.1
        if self.current is not None and self._case_cpu() > self.cpu_limit:
            self.kill(KILLED_CPU)
            return 0.1
        return min(0.1, self.deadline - now)

    def finish(self) -> dict[str, Any]:
        """For the job's report, once the model process is gone: the case it ended in
        (None between cases), what that case used, and why the monitor killed it."""
        report: dict[str, Any] = {
            "current_case": self.current,
            "next_case": self.next_case,
            "case_killed_by": self.killed_by,
            "case_cpu_seconds": self._case_cpu(),
            "case_wall_seconds": time.monotonic() - self.case_started,
        }
        if self.current is not None:
            report["case_log"] = self._copy_log(self.current)
        return report


def open_tracker(
    job: Job,
    pid: int,
    cgroup: RunCgroup | None,
    work: str,
    *,
    status: Callable[[dict[str, Any]], None],
    disk_full: Callable[[], bool],
) -> CaseTracker:
    """The follower of a batch job's cases, once its model process has its "go"."""
    assert job.first_case is not None
    work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        out_fd = os.open(
            os.path.join(job.run_dir, OUT_DIR),
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
        )
        info = os.fstat(out_fd)
    except OSError:
        os.close(work_fd)
        raise
    return CaseTracker(
        pid=pid,
        first_case=job.first_case,
        case_count=job.case_count,
        wall_timeout=job.limits.wall_timeout_seconds,
        cpu_limit=job.limits.cpu_seconds,
        cgroup=cgroup,
        work_fd=work_fd,
        out_fd=out_fd,
        owner=(info.st_uid, info.st_gid),
        file_size_bytes=job.limits.file_size_bytes,
        status=status,
        disk_full=disk_full,
    )
