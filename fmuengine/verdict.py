"""The verdict on a run: how it ended, from the sandbox's report and what it left.

The server's report is trusted (exit status and rusage from wait4, the cgroup's OOM
kills, whether the disk quota is full: measured outside the jail). The files in the run
dir's out/ are the model's words, parsed only through `fmuengine.outputs`: they can
label a failure, never turn it into a success or into the platform's fault. Only a
set-up that failed before model code ran is `platform_error` here (refunded).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmuengine import outputs
from fmuengine.protocol import (
    ERROR_FILE,
    REPORTABLE_ERROR_CODES,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
    RunErrorCode,
    SandboxLimits,
)

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
PLATFORM_ERROR = "platform_error"


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(number)
    return f"{name} ({description.lower()})" if description else name


Verdict = tuple[str, str | None, str | None, Path | None]  # status, error_code, message, result

MEMORY_MESSAGE = "The run used more than its memory limit of {limit} and was stopped."
DISK_MESSAGE = "The run wrote more than its disk quota of {limit} and was stopped."


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def judge(
    finished: dict[str, Any],
    out_dir: Path,
    limits: SandboxLimits,
    *,
    result_name: str = RESULT_FILE,
    error_name: str = ERROR_FILE,
) -> Verdict:
    """The run's verdict from the server's report (trusted) and the files it left
    (untrusted: parsed inside `fmuengine.outputs`, any surprise is the model's error).
    A batch's case is judged the same way, from its own files in out/."""
    return judge_loading(finished, out_dir, limits, result_name=result_name, error_name=error_name)[
        0
    ]


def judge_loading(
    finished: dict[str, Any],
    out_dir: Path,
    limits: SandboxLimits,
    *,
    result_name: str = RESULT_FILE,
    error_name: str = ERROR_FILE,
    read_result: Callable[[int], np.ndarray] | None = None,
) -> tuple[Verdict, np.ndarray | None]:
    """`judge`, and the result as it was checked, read into memory, when the run
    succeeded: a batch keeps each case's trace without parsing its file twice.
    `read_result(max_bytes)` (a batch case's: its bytes in the job's results file,
    parsed by `fmuengine.outputs`) stands for reading `result_name`."""
    loaded: list[np.ndarray] = []
    verdict = _verdict(finished, out_dir, limits, result_name, error_name, loaded, read_result)
    return verdict, (loaded[0] if loaded and verdict[0] == SUCCEEDED else None)


def _verdict(
    finished: dict[str, Any],
    out_dir: Path,
    limits: SandboxLimits,
    result_name: str,
    error_name: str,
    loaded: list[np.ndarray] | None,  # None: the result is checked (mapped), not kept
    read_result: Callable[[int], np.ndarray] | None,
) -> Verdict:
    kind = finished.get("exit_kind")
    # The wait status's exit code or signal number (JSON): an int for "exited"/"signaled".
    value: Any = finished.get("exit_value")
    # A model that exited by itself just before the kill landed is judged as it ended.
    killed_by = finished.get("killed_by") if kind != "exited" else None
    if finished.get("memory_limit") and killed_by != "cancelled":
        # An OOM kill in the run's cgroup decides, even if the wall clock ran out after.
        message = MEMORY_MESSAGE.format(limit=_mib(limits.memory_bytes))
        return FAILED, RunErrorCode.MEMORY_LIMIT, message, None
    if killed_by == "timeout":
        message = (
            f"The run exceeded its wall-clock limit of {limits.wall_timeout_seconds:g} s "
            "and was stopped."
        )
        return TIMED_OUT, RunErrorCode.TIMEOUT, message, None
    if killed_by == "cancelled":
        return CANCELLED, RunErrorCode.CANCELLED, "The run was cancelled.", None
    if finished.get("setup_error") or kind not in ("exited", "signaled"):
        logger.error("sandbox set-up failed before model code ran: %s", finished.get("setup_error"))
        message = "The sandbox could not run the model."
        return PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED, message, None
    disk_full = bool(finished.get("disk_full"))
    if kind == "signaled":
        return _judge_signal(int(value), finished, limits, disk_full)
    code = int(value)
    if code == 0:
        return _judge_result(finished, out_dir, result_name, limits, loaded, read_result)
    if disk_full:
        return (
            FAILED,
            RunErrorCode.DISK_LIMIT,
            DISK_MESSAGE.format(limit=_mib(limits.disk_bytes)),
            None,
        )
    if code == REPORTED_FAILURE_EXIT_CODE:
        report = outputs.read_error_report(
            out_dir / error_name, allowed_codes=frozenset(map(str, REPORTABLE_ERROR_CODES))
        )
        error_code, message = report or (RunErrorCode.MODEL_ERROR, "The simulation failed.")
        return FAILED, error_code, message, None
    message = f"The model ended the process with exit code {code}."
    return FAILED, RunErrorCode.MODEL_EXITED, message, None


def _judge_signal(
    number: int, finished: dict[str, Any], limits: SandboxLimits, disk_full: bool
) -> Verdict:
    cpu_seconds = float(finished.get("cpu_seconds") or 0.0)
    max_rss = int(finished.get("max_rss_bytes") or 0)
    if number == signal.SIGXCPU or (
        number == signal.SIGKILL and cpu_seconds >= limits.cpu_seconds - 0.5
    ):
        message = f"The model used more than its limit of {limits.cpu_seconds:g} CPU seconds."
        return FAILED, RunErrorCode.CPU_TIME_EXCEEDED, message, None
    if number == signal.SIGXFSZ:
        message = "The run exceeded its file size limit."
        return FAILED, RunErrorCode.FILE_SIZE_EXCEEDED, message, None
    if number == signal.SIGKILL and (
        max_rss >= 0.8 * limits.memory_bytes or finished.get("memory_limit_hits")
    ):
        message = MEMORY_MESSAGE.format(limit=_mib(limits.memory_bytes))
        return FAILED, RunErrorCode.MEMORY_LIMIT, message, None
    if disk_full:
        return (
            FAILED,
            RunErrorCode.DISK_LIMIT,
            DISK_MESSAGE.format(limit=_mib(limits.disk_bytes)),
            None,
        )
    return (
        FAILED,
        RunErrorCode.MODEL_CRASHED,
        f"The model crashed with {_signal_name(number)}.",
        None,
    )


def _judge_result(
    finished: dict[str, Any],
    out_dir: Path,
    result_name: str,
    limits: SandboxLimits,
    loaded: list[np.ndarray] | None,
    read_result: Callable[[int], np.ndarray] | None,
) -> Verdict:
    copied = (finished.get("outputs") or {}).get(RESULT_FILE)
    if copied == "too_large":
        message = f"The result is larger than the limit of {_mib(limits.file_size_bytes)}."
        return FAILED, RunErrorCode.FILE_SIZE_EXCEEDED, message, None
    path: Path | None = None  # a batch case's result is in its job's results file
    try:
        if read_result is not None:
            result = read_result(limits.file_size_bytes)
        else:
            path = out_dir / result_name
            read = outputs.read_result if loaded is None else outputs.load_result
            result = read(path, max_bytes=limits.file_size_bytes)
        if loaded is not None:
            loaded.append(result)
    except outputs.InvalidModelOutput as error:
        return (
            FAILED,
            RunErrorCode.INVALID_RESULT,
            f"The run ended without a valid result: {error.reason}",
            None,
        )
    return SUCCEEDED, None, None, path
