"""The run verdict (`fmuengine.verdict.judge`), table-driven: what the sandbox server
reported (trusted) and what the model left in out/ (untrusted) -> (status, error_code).

No sandbox and no root: the reports are dicts as the server sends them, and out/ is a
temporary dir holding the result.npy / error.json a model could have written.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmuengine.protocol import (
    ERROR_FILE,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
    RunErrorCode,
    SandboxLimits,
)
from fmuengine.verdict import (
    CANCELLED,
    FAILED,
    PLATFORM_ERROR,
    SUCCEEDED,
    TIMED_OUT,
    judge,
)

LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_bytes=256 << 20,
    file_size_bytes=1 << 20,
    max_processes=8,
    wall_timeout_seconds=5,
    disk_bytes=64 << 20,
)


def result_table(rows: int = 5) -> np.ndarray:
    table = np.zeros(rows, dtype=[("time", "f8"), ("h", "f8")])
    table["time"] = np.linspace(0.0, 1.0, rows)
    table["h"] = np.cos(table["time"])
    return table


def good_result(out: Path) -> None:
    np.save(out / RESULT_FILE, result_table())


def decreasing_times(out: Path) -> None:
    table = result_table()
    table["time"] = table["time"][::-1]
    np.save(out / RESULT_FILE, table)


def not_a_table(out: Path) -> None:
    np.save(out / RESULT_FILE, np.arange(5.0))


def garbage_result(out: Path) -> None:
    (out / RESULT_FILE).write_bytes(b"\x93NUMPY not really")


def error_report(code: str, message: str = "the model says why") -> Any:
    def write(out: Path) -> None:
        (out / ERROR_FILE).write_text(json.dumps({"code": code, "message": message}))

    return write


def nested_error_report(out: Path) -> None:
    (out / ERROR_FILE).write_text("[" * 100_000 + "]" * 100_000)


def nothing(out: Path) -> None:
    pass


def exited(code: int, **report: Any) -> dict[str, Any]:
    return {"exit_kind": "exited", "exit_value": code, **report}


def signaled(number: int, **report: Any) -> dict[str, Any]:
    return {"exit_kind": "signaled", "exit_value": int(number), **report}


# (server report, what the model left in out/) -> (status, error_code)
VERDICTS = {
    # --- success needs exit 0 AND a well-formed result --------------------------------------
    "exit 0 with a valid result": (exited(0), good_result, SUCCEEDED, None),
    "exit 0, result copied": (
        exited(0, outputs={RESULT_FILE: "copied"}),
        good_result,
        SUCCEEDED,
        None,
    ),
    "exit 0 without a result": (exited(0), nothing, FAILED, RunErrorCode.INVALID_RESULT),
    "exit 0, result not a table": (exited(0), not_a_table, FAILED, RunErrorCode.INVALID_RESULT),
    "exit 0, garbage result": (exited(0), garbage_result, FAILED, RunErrorCode.INVALID_RESULT),
    "exit 0, time decreases": (exited(0), decreasing_times, FAILED, RunErrorCode.INVALID_RESULT),
    "exit 0, result too large to copy": (
        exited(0, outputs={RESULT_FILE: "too_large"}),
        good_result,
        FAILED,
        RunErrorCode.FILE_SIZE_EXCEEDED,
    ),
    # --- a reported failure: error.json labels it, never more ------------------------------
    "exit 113, error.json says model_error": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        error_report("model_error"),
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    "exit 113, error.json says invalid_parameters": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        error_report("invalid_parameters"),
        FAILED,
        RunErrorCode.INVALID_PARAMETERS,
    ),
    "exit 113, error.json claims the platform failed": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        error_report("sandbox_failed"),
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    "exit 113, error.json claims a timeout": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        error_report("timeout"),
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    "exit 113, error.json nested too deep": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        nested_error_report,
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    "exit 113 without error.json": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        nothing,
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    "exit 113 with a valid result": (
        exited(REPORTED_FAILURE_EXIT_CODE),
        good_result,
        FAILED,
        RunErrorCode.MODEL_ERROR,
    ),
    # --- other exits ---------------------------------------------------------------------------
    "exit 3": (exited(3), good_result, FAILED, RunErrorCode.MODEL_EXITED),
    "exit 1 with the disk full": (
        exited(1, disk_full=True),
        nothing,
        FAILED,
        RunErrorCode.DISK_LIMIT,
    ),
    "exit 0 with the disk full and a valid result": (
        exited(0, disk_full=True),
        good_result,
        SUCCEEDED,
        None,
    ),
    "exit 113 with the disk full": (
        exited(REPORTED_FAILURE_EXIT_CODE, disk_full=True),
        error_report("model_error"),
        FAILED,
        RunErrorCode.DISK_LIMIT,
    ),
    # --- signals ---------------------------------------------------------------------------------
    "SIGSEGV": (signaled(signal.SIGSEGV), good_result, FAILED, RunErrorCode.MODEL_CRASHED),
    "SIGABRT": (signaled(signal.SIGABRT), nothing, FAILED, RunErrorCode.MODEL_CRASHED),
    "SIGXCPU": (signaled(signal.SIGXCPU), nothing, FAILED, RunErrorCode.CPU_TIME_EXCEEDED),
    "SIGKILL at the CPU limit": (
        signaled(signal.SIGKILL, cpu_seconds=9.8),
        nothing,
        FAILED,
        RunErrorCode.CPU_TIME_EXCEEDED,
    ),
    "SIGXFSZ": (signaled(signal.SIGXFSZ), nothing, FAILED, RunErrorCode.FILE_SIZE_EXCEEDED),
    "SIGKILL near the memory limit": (
        signaled(signal.SIGKILL, max_rss_bytes=250 << 20),
        nothing,
        FAILED,
        RunErrorCode.MEMORY_LIMIT,
    ),
    "SIGKILL after memory limit hits": (
        signaled(signal.SIGKILL, memory_limit_hits=3),
        nothing,
        FAILED,
        RunErrorCode.MEMORY_LIMIT,
    ),
    "SIGKILL, no limit reached": (
        signaled(signal.SIGKILL, cpu_seconds=1.0, max_rss_bytes=10 << 20),
        nothing,
        FAILED,
        RunErrorCode.MODEL_CRASHED,
    ),
    "SIGBUS with the disk full": (
        signaled(signal.SIGBUS, disk_full=True),
        nothing,
        FAILED,
        RunErrorCode.DISK_LIMIT,
    ),
    # --- what the server ended, or noticed outside the jail ------------------------------------
    "killed by the wall clock": (
        signaled(signal.SIGKILL, killed_by="timeout"),
        good_result,
        TIMED_OUT,
        RunErrorCode.TIMEOUT,
    ),
    "killed by a cancel": (
        signaled(signal.SIGKILL, killed_by="cancelled"),
        good_result,
        CANCELLED,
        RunErrorCode.CANCELLED,
    ),
    "an OOM kill in its cgroup": (
        signaled(signal.SIGKILL, memory_limit=True),
        nothing,
        FAILED,
        RunErrorCode.MEMORY_LIMIT,
    ),
    "an OOM kill, then the wall clock": (
        signaled(signal.SIGKILL, memory_limit=True, killed_by="timeout"),
        nothing,
        FAILED,
        RunErrorCode.MEMORY_LIMIT,
    ),
    "an OOM kill, then a cancel": (
        signaled(signal.SIGKILL, memory_limit=True, killed_by="cancelled"),
        nothing,
        CANCELLED,
        RunErrorCode.CANCELLED,
    ),
    "an OOM kill although it exited 0 with a result": (
        exited(0, memory_limit=True),
        good_result,
        FAILED,
        RunErrorCode.MEMORY_LIMIT,
    ),
    "exited by itself just before the timeout kill": (
        exited(0, killed_by="timeout"),
        good_result,
        SUCCEEDED,
        None,
    ),
    "exited 3 just before the cancel": (
        exited(3, killed_by="cancelled"),
        nothing,
        FAILED,
        RunErrorCode.MODEL_EXITED,
    ),
    # --- the platform's fault (refunded): only a set-up that failed before model code ----------
    "set-up failed": (
        {"exit_kind": "setup_failed", "setup_error": "mount: permission denied"},
        nothing,
        PLATFORM_ERROR,
        RunErrorCode.SANDBOX_FAILED,
    ),
    "set-up error reported with an exit": (
        exited(0, setup_error="cgroup: no such file"),
        good_result,
        PLATFORM_ERROR,
        RunErrorCode.SANDBOX_FAILED,
    ),
    "no exit status at all": ({}, good_result, PLATFORM_ERROR, RunErrorCode.SANDBOX_FAILED),
    "an unknown exit kind": (
        {"exit_kind": "vanished", "exit_value": 0},
        good_result,
        PLATFORM_ERROR,
        RunErrorCode.SANDBOX_FAILED,
    ),
}


@pytest.mark.parametrize(
    ("report", "left_behind", "status", "error_code"),
    list(VERDICTS.values()),
    ids=list(VERDICTS),
)
def test_verdict(tmp_path, report, left_behind, status, error_code):
    out = tmp_path / "out"
    out.mkdir()
    left_behind(out)

    verdict_status, verdict_code, message, result = judge(report, out, LIMITS)

    assert (verdict_status, verdict_code) == (status, error_code), message
    if status == SUCCEEDED:
        assert (message, result) == (None, out / RESULT_FILE)
    else:
        assert message
        assert result is None


def test_a_model_cannot_label_its_failure_as_the_platforms_to_be_refunded(tmp_path):
    """Whatever error.json says, a run that got as far as model code is never a platform
    error: every code the model may name, and some it may not."""
    for code in [*RunErrorCode, "whatever"]:
        out = tmp_path / str(code)
        out.mkdir()
        error_report(str(code))(out)
        status, verdict_code, _message, _result = judge(
            exited(REPORTED_FAILURE_EXIT_CODE), out, LIMITS
        )
        assert status == FAILED, code
        assert verdict_code != RunErrorCode.SANDBOX_FAILED, code


@pytest.mark.parametrize(
    ("report", "words"),
    [
        (signaled(signal.SIGSEGV), "SIGSEGV"),
        (signaled(signal.SIGKILL, memory_limit=True), "256 MiB"),
        (exited(1, disk_full=True), "64 MiB"),
        (signaled(signal.SIGKILL, killed_by="timeout"), "5 s"),
        (signaled(signal.SIGXCPU), "10 CPU seconds"),
        (exited(7), "exit code 7"),
        (exited(0, outputs={RESULT_FILE: "too_large"}), "1 MiB"),
        (exited(REPORTED_FAILURE_EXIT_CODE), "The simulation failed."),
    ],
)
def test_the_message_names_the_limit_or_the_cause(tmp_path, report, words):
    _status, _code, message, _result = judge(report, tmp_path, LIMITS)
    assert message is not None
    assert words in message


def test_a_model_reported_message_is_kept_cleaned(tmp_path):
    error_report("invalid_parameters", "k\x00 must be\n\n positive")(tmp_path)
    _status, code, message, _result = judge(exited(REPORTED_FAILURE_EXIT_CODE), tmp_path, LIMITS)
    assert (code, message) == (RunErrorCode.INVALID_PARAMETERS, "k must be positive")
