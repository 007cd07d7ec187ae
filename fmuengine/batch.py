"""Run many cases of one model for one owner (a study) in one sandbox process.

A single run pays for a job of its own: a fresh jail, the model loaded, one
`fmpy.simulate_fmu` call, the verdict. For a study (hundreds of cases of one model,
differing in their start values) the job and the loading would cost more than the
simulation, so `run_batch` runs the cases one after the other in ONE job, with the
isolation of a single run (the same jail, slot uid, namespaces, seccomp filter, cgroup
and rlimits: see docs/sandbox.md), the model extracted and parsed once (the server's
prepared copy, as for single runs), and per case a fresh FMU instance: one
`fmpy.simulate_fmu(unzipdir, model_description=..., start_values=...)` call, exactly as
a single run makes it. What is shared between the cases of a job is what one owner's
one model would share with itself anyway.

Each case is judged as a single run of it would be, with the same error codes:

- the model process marks each case's start and end for its monitor, which enforces
  the per-case limits (wall clock: a rolling deadline; CPU time: on the cgroup; memory,
  processes and disk: the job's cgroup, rlimits and tmpfs, sized for one case, the
  scratch emptied between cases) and copies each case's result, error report and log
  out as soon as the case ends; the runner parses them as untrusted output
  (`fmuengine.outputs`) and holds the trace in memory (a copy);
- a case that crashes, exits, hangs past its limit, exceeds the memory limit or breaks
  the markers ends the job: that case gets the job's verdict (judged like a single
  run's), and the remaining cases continue in a fresh job. A job never serves another
  batch. A case that hit the memory limit after other cases ran in its process is run
  once more in a fresh job, so that what earlier cases left behind (leaks) cannot give
  it a verdict a single run of it would not get;
- `should_cancel` ends the batch: the cases without an outcome are `cancelled`, the one
  that was running with a single run's message (`CANCELLED_MESSAGE`), the ones that
  never started with `NOT_STARTED_MESSAGE`.

Throughput, measured with a throwaway script (not a test): 1,000 cases of the
`bouncing_ball` test FMU (start values h and e differing), 2 worker processes, each
calling run_batch on chunks of 200, against a careful bare-fmpy loop in 2 processes that
extracts the FMU once and calls `simulate_fmu(unzipdir, model_description=...)` per
case; timed after set-up (sandbox server started, model prepared), CPU summed over each
worker's process tree. On this 2-core machine, shared with other work (load 4-7),
alternating 6 rounds: bare median 136 cases/s and 5.7 ms CPU a case, batches median 118
cases/s and 6.3 ms CPU a case; throughput ratio batch/bare per round 0.62-1.04, median
0.96. With chunks of 125 (4 rounds): bare 206 cases/s, 7.0 ms; batches 205 cases/s,
8.4 ms; ratio 0.73-1.42, median 0.86; extra CPU 1.0-2.2 ms a case. What a case costs
beyond its simulate_fmu call, per process: runner ~0.37 ms
(event, parsing and copying the result, on_case), server ~0.18 ms (relaying the event),
monitor ~0.1-0.3 ms, the model process's own bookkeeping between cases, and ~30 ms of
CPU per job (jail, model load) spread over its cases. The noise of the shared machine
(bare alone varied 85-267 cases/s) is larger than these differences.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fmuengine import outputs
from fmuengine.fsutil import free_range
from fmuengine.protocol import (
    BATCH_YIELD_EXIT_CODE,
    ERROR_FILE,
    LOG_FILE,
    RESULT_FILE,
    RESULTS_ALIGNMENT,
    RunCommand,
    RunErrorCode,
    SandboxLimits,
    batch_results_file,
    case_file,
)
from fmuengine.runner import (
    POLL_INTERVAL,
    PREPARE_GRACE_SECONDS,
    SERVER_GRACE_SECONDS,
    _check_params,
    _refusal,
    _RunDir,
    _Slot,
)
from fmuengine.sandbox_client import SandboxConnection, SandboxUnavailable, connection_pool
from fmuengine.verdict import CANCELLED, FAILED, PLATFORM_ERROR, Verdict, judge_loading

__all__ = ["CANCELLED_MESSAGE", "NOT_STARTED_MESSAGE", "CaseOutcome", "run_batch"]

logger = logging.getLogger(__name__)

PROTOCOL_MESSAGE = "The model broke the batch's case markers; the case was stopped."
# A cancelled case that was running (its message is a single run's), and one that never
# started: a caller that charges for what ran can tell them apart.
CANCELLED_MESSAGE = "The run was cancelled."
NOT_STARTED_MESSAGE = "The case was cancelled before it started."


@dataclass(frozen=True)
class CaseOutcome:
    """How one case of a batch ended. `status` and `error_code` are what a single run
    of that case would get (`fmuengine.runner` statuses, `RunErrorCode` values)."""

    index: int  # position in `cases`
    status: str  # succeeded | failed | timed_out | cancelled | platform_error
    error_code: str | None
    message: str | None
    # The trace (time + outputs) as a structured array, checked as untrusted output
    # and copied into memory; None unless succeeded (and in run_batch's returned list
    # when on_case got it: see run_batch).
    result: np.ndarray | None
    log_tail: str
    cpu_seconds: float
    wall_seconds: float


class _Batch:
    """The runner's bookkeeping of one batch: which case is next, the outcomes."""

    def __init__(
        self,
        out: Path,
        count: int,
        limits: SandboxLimits,
        on_case: Callable[[CaseOutcome], None] | None,
    ) -> None:
        self.out = out  # the run dir's out/, where the monitor copies each case's files
        self.count = count
        self.limits = limits
        self.on_case = on_case
        self.next = 0  # the first case without an outcome
        self.outcomes: list[CaseOutcome] = []
        self.retried: set[int] = set()
        self.results_name = ""  # the running job's results file in out/
        self.results_fd = -1

    # ---- a job's results file ----------------------------------------------------------

    def start_job(self, first_case: int) -> None:
        self.results_name = batch_results_file(first_case)
        self.results_fd = -1

    def end_job(self) -> None:
        if self.results_fd >= 0:
            os.close(self.results_fd)
            self.results_fd = -1
        if self.results_name:
            self.remove(self.results_name)
            self.results_name = ""

    def _results(self) -> int:
        """The job's results file (its monitor made it, owned by us, in our out/)."""
        if self.results_fd < 0:
            try:
                self.results_fd = os.open(
                    os.path.join(self.out, self.results_name),
                    os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC,
                )
            except OSError as error:
                raise SandboxUnavailable(f"the job's results file is missing: {error}") from error
        return self.results_fd

    def _read_result(self, offset: int, size: int, max_bytes: int) -> np.ndarray:
        """A case's result from the results file, parsed as untrusted output; its blocks
        are given back at once, so the host's disk holds only results not read yet."""
        if size > max_bytes:
            raise outputs.InvalidModelOutput(
                "The result file is larger than the run's file size limit."
            )
        fd = self._results()
        try:
            data = os.pread(fd, size, offset)
        finally:
            free_range(fd, offset, -(-size // RESULTS_ALIGNMENT) * RESULTS_ALIGNMENT)
        return outputs.parse_result(data, max_bytes=max_bytes)

    def record(self, outcome: CaseOutcome) -> None:
        """The next case's outcome, handed to `on_case` at once (in index order)."""
        assert outcome.index == self.next
        self.next += 1
        if self.on_case is not None:
            self.on_case(outcome)
            if outcome.result is not None:  # the caller has it: not held twice
                outcome = replace(outcome, result=None)
        self.outcomes.append(outcome)

    def cancel_running(self, finished: dict[str, Any]) -> None:
        """The case the cancel stopped while it ran (the ones after it never started)."""
        if self.next < self.count:
            self.record(
                CaseOutcome(
                    index=self.next,
                    status=CANCELLED,
                    error_code=RunErrorCode.CANCELLED,
                    message=CANCELLED_MESSAGE,
                    result=None,
                    log_tail="",
                    cpu_seconds=float(finished.get("case_cpu_seconds") or 0.0),
                    wall_seconds=float(finished.get("case_wall_seconds") or 0.0),
                )
            )

    def end_all(self, status: str, code: str, message: str) -> None:
        while self.next < self.count:
            self.record(CaseOutcome(self.next, status, code, message, None, "", 0.0, 0.0))

    def remove(self, *names: str) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.out, name))

    def log_tail(self, name: str, copied: Any) -> str:
        if copied != "copied":
            return ""
        return outputs.read_log_tail(self.out / name)

    # ---- one case's outcome ----------------------------------------------------------

    def case_ended(self, event: dict[str, Any], first_of_job: int) -> bool:
        """A case the job ended (the monitor's report of it). False when that case is to
        be run again in a fresh job (the memory limit, after other cases)."""
        index = self.next
        copied: dict[str, Any] = event["outputs"] if isinstance(event.get("outputs"), dict) else {}
        npy, error, log = (case_file(index, suffix) for suffix in ("npy", "error.json", "log"))
        finished = {
            "exit_kind": "exited",
            "exit_value": int(event.get("exit_code", 1)),
            "disk_full": bool(event.get("disk_full")),
            "outputs": {RESULT_FILE: copied.get("npy")},
        }
        read = None
        if copied.get("npy") == "copied":
            self._results()  # its absence is the platform's fault, not the model's
            offset, size = int(copied.get("at", 0)), int(copied.get("bytes", 0))
            read = functools.partial(self._read_result, offset, size)
        try:
            verdict, result = _judge(finished, self.out, self.limits, npy, error, read)
            status, code, message, _path = verdict
            if code == RunErrorCode.MEMORY_LIMIT and self._retry(index, first_of_job):
                return False
            log_tail = self.log_tail(log, copied.get("log"))
        finally:
            self.remove(
                *(
                    name
                    for name, key in ((error, "error.json"), (log, "log"))
                    if copied.get(key) not in (None, "absent")
                )
            )
        self.record(
            CaseOutcome(
                index=index,
                status=status,
                error_code=None if code is None else str(code),
                message=message,
                result=result,
                log_tail=log_tail,
                cpu_seconds=float(event.get("cpu_seconds") or 0.0),
                wall_seconds=float(event.get("wall_seconds") or 0.0),
            )
        )
        return True

    def job_ended(self, finished: dict[str, Any], first_of_job: int, ended: int) -> None:
        """The job is over. The case it ended in (or, between cases, the next one) gets
        its verdict, judged as a single run's; a job that stopped between cases on
        purpose (to give the rest a fresh process) gives none."""
        index = self.next
        current = finished.get("current_case")
        result: np.ndarray | None = None  # read into memory by the verdict
        try:
            if index >= self.count:
                return
            yielded = (
                finished.get("exit_kind") == "exited"
                and finished.get("exit_value") == BATCH_YIELD_EXIT_CODE
                and current is None
                and not finished.get("killed_by")
            )
            if yielded and ended > 0:
                return
            verdict: Verdict
            if finished.get("killed_by") == "protocol":
                verdict = (FAILED, RunErrorCode.INVALID_RESULT, PROTOCOL_MESSAGE, None)
            else:
                if current is not None:  # what the case used, not what the job did
                    finished = dict(finished, cpu_seconds=finished.get("case_cpu_seconds"))
                verdict, result = _judge(
                    finished, self.out, self.limits, RESULT_FILE, ERROR_FILE, None
                )
            status, code, message, _path = verdict
            if code == RunErrorCode.MEMORY_LIMIT and self._retry(index, first_of_job):
                return
            if finished.get("case_log") == "copied":
                log_tail = self.log_tail(case_file(index, "log"), "copied")
            else:
                log_tail = outputs.read_log_tail(self.out / LOG_FILE)
            self.record(
                CaseOutcome(
                    index=index,
                    status=status,
                    error_code=None if code is None else str(code),
                    message=message,
                    result=result,
                    log_tail=log_tail,
                    cpu_seconds=float(finished.get("cpu_seconds") or 0.0),
                    wall_seconds=float(
                        finished.get("case_wall_seconds") or finished.get("wall_seconds") or 0.0
                    ),
                )
            )
        finally:
            # The job's own files: the next job's monitor writes them afresh.
            self.remove(RESULT_FILE, ERROR_FILE, LOG_FILE, case_file(index, "log"))

    def _retry(self, index: int, first_of_job: int) -> bool:
        """Whether to run a case that hit the memory limit once more, alone in a fresh
        process: only when cases before it ran in its process (their leftovers count
        against the same cgroup and address space)."""
        if index == first_of_job or index in self.retried:
            return False
        self.retried.add(index)
        return True


def _judge(
    finished: dict[str, Any],
    out_dir: Path,
    limits: SandboxLimits,
    result: str,
    error: str,
    read: Callable[[int], np.ndarray] | None,
) -> tuple[Verdict, np.ndarray | None]:
    try:
        return judge_loading(
            finished, out_dir, limits, result_name=result, error_name=error, read_result=read
        )
    except Exception as error_:  # whatever the model left: its own error, never ours
        logger.warning("judging a batch case raised %r: the model's output is invalid", error_)
        message = "The run ended without a valid result."
        return (FAILED, RunErrorCode.INVALID_RESULT, message, None), None


def _relay_job(
    connection: SandboxConnection,
    run_id: str,
    batch: _Batch,
    first_of_job: int,
    should_cancel: Callable[[], bool] | None,
) -> tuple[dict[str, Any] | None, str | None, int]:
    """Follow one job: its cases' outcomes recorded as they end, cancels relayed.
    Returns (finished event or None, why the connection had to be dropped, how many
    cases it ended)."""
    limits = batch.limits
    now = time.monotonic()
    # Between two events at most a case and the gap before it (each up to the limit).
    window = 2 * limits.wall_timeout_seconds + SERVER_GRACE_SECONDS
    backstop = now + PREPARE_GRACE_SECONDS + window
    cancel_requested = stop_requested = False
    next_cancel_poll = now
    ended = 0
    while True:
        now = time.monotonic()
        if should_cancel is not None and not cancel_requested and now >= next_cancel_poll:
            next_cancel_poll = now + POLL_INTERVAL
            if should_cancel():
                cancel_requested = True
                if not stop_requested:
                    connection.send({"op": "cancel", "run_id": run_id})
                backstop = min(backstop, now + SERVER_GRACE_SECONDS)
        if now >= backstop:
            return None, "cancelled" if cancel_requested else "unresponsive", ended
        event = connection.read_event(min(POLL_INTERVAL, backstop - now))
        if event is None or event.get("run_id") != run_id:
            continue
        kind = event.get("event")
        if kind == "finished":
            if stop_requested and event.get("killed_by") == "cancelled":
                event = dict(event, killed_by=None, current_case=None, retry=True)
            return event, None, ended
        if kind == "started":
            backstop = min(backstop, time.monotonic() + window)
        elif kind == "case" and stop_requested:  # past the case to run again: not kept
            index = int(event.get("index", -1))
            batch.remove(*(case_file(index, suffix) for suffix in ("npy", "error.json", "log")))
        elif kind == "case":
            if event.get("index") != batch.next:
                raise SandboxUnavailable("the sandbox reported a case out of order")
            backstop = time.monotonic() + window
            if batch.case_ended(event, first_of_job):
                ended += 1
            else:  # to be run again, alone: this job must not go on past it
                stop_requested = True
                connection.send({"op": "cancel", "run_id": run_id})
        elif kind == "error":
            raise SandboxUnavailable(str(event.get("message")))


def run_batch(
    *,
    fmu_path: Path,
    cases: Sequence[dict[str, Any]],
    limits: SandboxLimits,
    model_key: str | None = None,
    on_case: Callable[[CaseOutcome], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[CaseOutcome]:
    """Simulate every case of `cases` (each a params dict as `run_simulation` takes it)
    of the model `fmu_path`, one owner's, in as few sandbox jobs as possible (one,
    unless a case ends its process); `limits` apply to each case. `model_key` as for
    `run_simulation` (the server's prepared copy is reused).

    Returns one outcome per case, in index order. `on_case` is called in this thread as
    each case ends, in index order; when it is given, the returned outcomes carry no
    trace (`result` None), so that a caller streaming the traces never has them all in
    memory. Raises ValueError for malformed params (before anything runs); every other
    problem is in the outcomes."""
    for params in cases:
        _check_params(params)
    cases_json = json.loads(json.dumps(list(cases)))  # fails early if not JSON-serializable
    if not cases_json:
        return []
    try:
        run_dir = _RunDir.create(Path(fmu_path), {"cases": cases_json})
    except (OSError, SandboxUnavailable) as error:
        logger.error("cannot prepare a sandbox batch: %s", error)
        failed = _Batch(Path("/nonexistent"), len(cases_json), limits, on_case)
        failed.end_all(
            PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, "The sandbox could not prepare the run."
        )
        return failed.outcomes
    if model_key is not None and model_key != run_dir.model_key:
        logger.warning(
            "the caller's key for %s is not its sha256; the file's own is used", fmu_path
        )
    batch = _Batch(run_dir.out, len(cases_json), limits, on_case)
    connection: SandboxConnection | None = None
    slot: _Slot | None = None
    try:
        try:
            connection = connection_pool.take()
            refusal = _refusal(connection)
        except SandboxUnavailable as error:
            refusal = str(error)
        if refusal or connection is None:
            logger.error("no batch started: %s", refusal)
            message = "The sandbox is not available on this worker; the run was not started."
            batch.end_all(PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, message)
            return batch.outcomes
        slot = _Slot()
        job_number = 0
        while batch.next < batch.count:
            if should_cancel is not None and should_cancel():
                break
            job_number += 1
            first = batch.next
            run_id = f"{run_dir.path.name}.{job_number}"
            command = RunCommand(
                run_id=run_id,
                run_dir=str(run_dir.path),
                uid=slot.uid,
                gid=slot.uid,
                limits=limits,
                model_key=run_dir.model_key if model_key is not None else None,
                first_case=first,
                case_count=batch.count,
            )
            connection.send(command.to_json())
            batch.start_job(first)
            try:
                finished, kill_reason, ended = _relay_job(
                    connection, run_id, batch, first, should_cancel
                )
            finally:
                batch.end_job()
            if finished is None:
                connection.kill()
                connection = None
                if kill_reason != "cancelled":
                    logger.error("the sandbox server stopped answering; dropped it")
                    message = "The sandbox stopped responding; the run was stopped."
                    batch.end_all(PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, message)
                else:  # the job was not stopped in time: its case was running
                    batch.cancel_running({})
                break
            if finished.get("killed_by") == "cancelled":
                batch.remove(RESULT_FILE, ERROR_FILE, LOG_FILE)
                if finished.get("current_case") == batch.next:
                    batch.cancel_running(finished)
                break
            if not finished.get("retry"):
                batch.job_ended(finished, first, ended)
            else:
                batch.remove(RESULT_FILE, ERROR_FILE, LOG_FILE)
        batch.end_all(CANCELLED, RunErrorCode.CANCELLED, NOT_STARTED_MESSAGE)
        return batch.outcomes
    except SandboxUnavailable as error:
        logger.error("sandbox failure in a batch: %s", error)
        if connection is not None:
            connection.kill()
            connection = None
        batch.end_all(
            PLATFORM_ERROR,
            RunErrorCode.SANDBOX_FAILED,
            "The sandbox failed while running the model.",
        )
        return batch.outcomes
    except BaseException:
        # A callback raised or the worker is being stopped: the job must not outlive us.
        if connection is not None:
            connection.kill()
            connection = None
        raise
    finally:
        if connection is not None:
            connection_pool.give_back(connection)
        if slot is not None:
            slot.release()
        run_dir.remove()
