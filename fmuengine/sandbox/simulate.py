"""What runs inside the jail, after the uid drop and the seccomp filter: a simulation, or
the preparation of a model for the cache. From here on nothing is trusted.

Both jobs read and write only the run's cwd (/sandbox, on its scratch tmpfs) and read
/model (the cache's copy of this very FMU, read-only). Their verdict is the exit code
plus files the sandbox copies out bounded and the runner parses as untrusted input.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fmuengine.protocol import (
    BATCH_YIELD_EXIT_CODE,
    ERROR_FILE,
    EXTRACT_DIR,
    LOG_FILE,
    MODEL_FILE,
    MODEL_MOUNT_POINT,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
    RunErrorCode,
    case_file,
)

# The cache's layout of one prepared model (see model_cache.py).
PREPARED_OUTPUT_DIR = "prepared"
PREPARED_FILES = "fmu"
PREPARED_DESCRIPTION = "description.pickle"
PROGRESS_WRITE_INTERVAL = 0.1
# What the cache prepares at most (larger FMUs are extracted by their run).
MODEL_CACHE_MAX_DESCRIPTION_BYTES = 4 << 20
MODEL_CACHE_MAX_UNCOMPRESSED_BYTES = 512 << 20


def _extract_and_read(fmu_path: str, unzip_dir: str) -> Any:
    """Extract with the upload's name rule and read the description only after the
    upload's defused XML checks (no DTD ever reaches lxml)."""
    from fmuengine.inspection import FMULimits, extract_fmu, read_model_description_safely

    limits = FMULimits(
        max_model_description_bytes=MODEL_CACHE_MAX_DESCRIPTION_BYTES,
        max_uncompressed_bytes=MODEL_CACHE_MAX_UNCOMPRESSED_BYTES,
    )
    extract_fmu(Path(fmu_path), Path(unzip_dir), limits=limits)
    return read_model_description_safely(Path(unzip_dir), limits=limits)


def prepare_model(model_key: str) -> int:
    """The cache's preparation of /sandbox/model.fmu into /sandbox/prepared: checked
    against its key, extracted and parsed as above, the description pickled for runs.
    Confined like a run, because it reads an archive and XML a customer wrote."""
    with open(MODEL_FILE, "rb") as stream:
        if hashlib.file_digest(stream, "sha256").hexdigest() != model_key:
            return 2
    os.mkdir(PREPARED_OUTPUT_DIR, 0o755)
    files = os.path.join(PREPARED_OUTPUT_DIR, PREPARED_FILES)
    description = _extract_and_read(MODEL_FILE, files)
    with open(os.path.join(PREPARED_OUTPUT_DIR, PREPARED_DESCRIPTION), "wb") as pickled:
        pickle.dump(description, pickled, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


def _load_prepared_description() -> Any:
    """The cache's pickle, read-only to the run. It was made by a confined preparer
    from this very file, and is loaded here, after seccomp, as untrusted as the model."""
    with open(os.path.join(MODEL_MOUNT_POINT, PREPARED_DESCRIPTION), "rb") as pickled:
        return pickle.load(pickled)  # noqa: S301


FMI_STATUS_LABELS = ("ok", "warning", "discard", "error", "fatal", "pending")


_last_reported: list[str] = []  # the code of the last failure reported (batches look)


def _report_failure(code: str, message: str, file_name: str = ERROR_FILE) -> int:
    print(f"[sandbox] {message}", file=sys.stderr)
    _last_reported[:] = [str(code)]
    with contextlib.suppress(OSError), open(file_name, "w") as error_file:
        json.dump({"code": str(code), "message": message}, error_file)
    return REPORTED_FAILURE_EXIT_CODE


def _near_memory_limit() -> bool:
    """True when the peak address space came within 128 MB of RLIMIT_AS."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024 >= limit - (128 << 20)
    except (OSError, ValueError):
        pass
    return False


def _numpy_type_for(variable_type: str) -> str:
    if variable_type == "Boolean":
        return "?"
    if variable_type in ("Integer", "Enumeration") or "Int" in variable_type:
        return "<i4"
    return "<f8"


def _load_model(prepared: bool) -> tuple[str, Any] | int:
    """(unzip dir, model description): the server's prepared copy, or model.fmu in the
    cwd, extracted and checked here; an exit code when it cannot be read."""
    try:
        if prepared:
            return os.path.join(MODEL_MOUNT_POINT, PREPARED_FILES), _load_prepared_description()
        unzip_dir = os.path.abspath(EXTRACT_DIR)
        return unzip_dir, _extract_and_read(MODEL_FILE, unzip_dir)
    except MemoryError:
        return _report_failure(
            RunErrorCode.MEMORY_LIMIT, "The FMU could not be read within the memory limit."
        )
    except Exception as error:
        return _report_failure(RunErrorCode.INVALID_FMU, f"The FMU could not be read: {error}")


def simulate_in_sandbox(params: dict[str, Any], progress_fd: int, prepared: bool) -> int:
    """Simulate the FMU (the server's prepared copy, or model.fmu in the cwd, extracted
    and checked here); write result.npy. Returns the exit code for the model process."""
    loaded = _load_model(prepared)
    if isinstance(loaded, int):
        return loaded
    unzip_dir, model_description = loaded
    return _simulate_case(
        unzip_dir, model_description, params, progress_fd, RESULT_FILE, ERROR_FILE
    )


def _simulate_case(
    unzip_dir: str,
    model_description: Any,
    params: dict[str, Any],
    progress_fd: int,
    result_file: str,
    error_file: str,
) -> int:
    """One `fmpy.simulate_fmu` call (a fresh FMU instance) with `params`: its result
    saved to `result_file`, or its failure to `error_file`; the exit code it means.
    `progress_fd` < 0: no progress reports (a batch's cases)."""
    import fmpy
    import numpy as np
    from fmpy.fmi1 import FMICallException

    def fail(code: str, message: str) -> int:
        return _report_failure(code, message, error_file)

    variables = {variable.name: variable for variable in model_description.modelVariables}
    start_values = params.get("start_values") or {}
    output = params.get("output") or None
    input_table = params.get("input") or None
    input_names = list(input_table["columns"][1:]) if input_table else []
    unknown = [
        name for name in [*start_values, *(output or []), *input_names] if name not in variables
    ]
    if unknown:
        return fail(
            RunErrorCode.INVALID_PARAMETERS, f"Unknown variable(s): {', '.join(unknown[:10])}."
        )
    fmi_type = params.get("fmi_type")
    if fmi_type == "ModelExchange" and model_description.modelExchange is None:
        return fail(RunErrorCode.INVALID_PARAMETERS, "The model does not support ModelExchange.")
    if fmi_type == "CoSimulation" and model_description.coSimulation is None:
        return fail(RunErrorCode.INVALID_PARAMETERS, "The model does not support CoSimulation.")

    input_signals = None
    if input_table:
        dtype = [("time", "<f8")] + [
            (name, _numpy_type_for(variables[name].type)) for name in input_names
        ]
        try:
            input_signals = np.array([tuple(row) for row in input_table["rows"]], dtype=dtype)
        except (TypeError, ValueError) as error:
            return fail(RunErrorCode.INVALID_PARAMETERS, f"The input table is not valid: {error}")

    experiment = model_description.defaultExperiment
    start_time = params.get("start_time")
    if start_time is None:
        start_time = experiment.startTime if experiment and experiment.startTime is not None else 0
    stop_time = params.get("stop_time")
    if stop_time is None:
        has_stop = experiment is not None and experiment.stopTime is not None
        stop_time = experiment.stopTime if has_stop else float(start_time) + 1
    span = float(stop_time) - float(start_time)
    last_report = 0.0

    def step_finished(simulated_time: float, recorder: Any) -> bool:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_WRITE_INTERVAL:
            last_report = now
            fraction = (simulated_time - float(start_time)) / span if span > 0 else 1.0
            # Best effort: the server may read slowly (the pipe is non-blocking) or be gone.
            with contextlib.suppress(OSError):
                os.write(progress_fd, b"%.6f\n" % fraction)
        return True

    keyword_arguments = {
        name: params[name]
        for name in (
            "start_time",
            "stop_time",
            "output_interval",
            "step_size",
            "relative_tolerance",
            "fmi_type",
            "solver",
        )
        if params.get(name) is not None
    }
    try:
        result = fmpy.simulate_fmu(
            unzip_dir,
            model_description=model_description,
            start_values=start_values,
            input=input_signals,
            output=output,
            step_finished=step_finished if progress_fd >= 0 else None,
            **keyword_arguments,
        )
        np.save(result_file, np.asarray(result), allow_pickle=False)
    except MemoryError:
        return fail(RunErrorCode.MEMORY_LIMIT, "The model ran out of memory.")
    except FMICallException as error:
        label = FMI_STATUS_LABELS[error.status] if error.status in range(6) else str(error.status)
        if _near_memory_limit():
            return fail(
                RunErrorCode.MEMORY_LIMIT,
                f"The model ran out of memory ({error.function} returned {label}).",
            )
        return fail(
            RunErrorCode.MODEL_ERROR, f"The model returned status {label} from {error.function}."
        )
    except OSError as error:
        if error.errno == errno.ENOSPC:
            return fail(RunErrorCode.DISK_LIMIT, "The run exceeded its disk quota.")
        if error.errno == errno.EFBIG:
            return fail(RunErrorCode.FILE_SIZE_EXCEEDED, "The run exceeded its file size limit.")
        return fail(RunErrorCode.MODEL_ERROR, f"The simulation failed: {error}")
    except Exception as error:
        if _near_memory_limit():
            return fail(RunErrorCode.MEMORY_LIMIT, f"The model ran out of memory: {error}")
        return fail(RunErrorCode.MODEL_ERROR, f"The simulation failed: {error}")
    return 0


# ---- batches --------------------------------------------------------------------------

# After a failure with one of these codes the process may hold what the case left
# (leaked memory near RLIMIT_AS, a full scratch): the next case gets a fresh process.
STATEFUL_FAILURES = frozenset(
    {RunErrorCode.MEMORY_LIMIT, RunErrorCode.DISK_LIMIT, RunErrorCode.FILE_SIZE_EXCEEDED}
)
# What stays in the cwd between cases: the log, the FMU and what a run extracted from it.
KEPT_BETWEEN_CASES = frozenset({LOG_FILE, MODEL_FILE, EXTRACT_DIR})
SCRATCH_DIRS = (".", "/tmp")  # noqa: S108  (the run's own tmpfs in its jail)


def simulate_cases(batch: Any, first_case: int, case_fd: int, prepared: bool) -> int:
    """A batch's cases from `first_case` on, in this one process: the model read once,
    then per case a fresh FMU instance (one `fmpy.simulate_fmu` call, as a single run
    makes it, without progress reports), its result in case-<i>.npy or its failure in
    case-<i>.error.json, and "s <i>" / "e <i> <exit code> <result bytes> <error bytes>
    <log size>" on `case_fd` to the monitor, followed by the result and the error report
    themselves (read back and removed before the next case's code runs, which so never
    sees them), and where its part of fmu.log ends. The monitor enforces the per-case
    limits and copies the case's files out.

    Returns BATCH_YIELD_EXIT_CODE when the process should not serve another case (the
    runner then continues in a fresh one), 0 when every case was run."""
    cases = batch.get("cases") if isinstance(batch, dict) else None
    if not isinstance(cases, list) or not 0 <= first_case < len(cases):
        return _report_failure(RunErrorCode.INVALID_PARAMETERS, "The batch has no such case.")
    loaded = _load_model(prepared)
    if isinstance(loaded, int):
        return loaded  # the job's own failure: the runner gives it to the first case
    unzip_dir, model_description = loaded
    # "\n" first: ends any junk line the model left on the pipe. The end of a case and
    # the start of the next go in one write: one wake-up of the monitor per case.
    started = b"\ns %d\n" % first_case
    for index in range(first_case, len(cases)):
        _mark(case_fd, started)
        params = cases[index] if isinstance(cases[index], dict) else {}
        del _last_reported[:]
        code = _simulate_case(
            unzip_dir,
            model_description,
            params,
            -1,
            case_file(index, "npy"),
            case_file(index, "error.json"),
        )
        ended, stream_fd = _case_files(index, code)
        last = index + 1 == len(cases)
        yielding = not last and (
            bool(set(_last_reported) & STATEFUL_FAILURES) or not _clean_scratch()
        )
        if stream_fd >= 0:  # a large file follows its marker straight from the disk
            _mark(case_fd, ended)
            _send_file(case_fd, stream_fd)
            ended = b""
        if last or yielding:
            _mark(case_fd, ended)
            return BATCH_YIELD_EXIT_CODE if yielding else 0
        started = ended + b"s %d\n" % (index + 1)
    return 0


# A case's file up to this size goes with its marker in one write (one wake-up of the
# monitor); a larger one is sent from the file, never held in this process's memory.
INLINE_CASE_FILE_BYTES = 1 << 20


def _case_files(index: int, code: int) -> tuple[bytes, int]:
    """The end marker of a case and its file (taken out of the cwd): the result, or the
    error report; (marker and the file's bytes, -1), or (marker, an fd of a large file
    to send after it)."""
    name = case_file(index, "npy" if code == 0 else "error.json")
    data, fd, size = b"", -1, 0
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        os.unlink(name)
        size = os.fstat(fd).st_size
        if size <= INLINE_CASE_FILE_BYTES:
            data = os.read(fd, size + 1)[:size]
            size = len(data)
            os.close(fd)
            fd = -1
    except OSError:
        if fd >= 0:
            os.close(fd)
        data, fd, size = b"", -1, 0
    try:
        log_size = os.fstat(1).st_size  # stdout and stderr are fmu.log
    except OSError:
        log_size = 0
    sizes = (size, 0) if code == 0 else (0, size)
    header = b"\ne %d %d %d %d %d\n" % (index, code, *sizes, log_size)
    return header + data, fd


def _send_file(case_fd: int, fd: int) -> None:
    """All of a file after its marker (the size the marker says: it was fstat'ed)."""
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size:
            sent = os.sendfile(case_fd, fd, done, size - done)
            if sent <= 0:
                break
            done += sent
        if done < size:  # the marker promised more: what is missing is zeros
            _mark(case_fd, bytes(size - done))
    finally:
        os.close(fd)


def _mark(case_fd: int, line: bytes) -> None:
    """A case marker for the monitor (it reads them as untrusted: see cases.py)."""
    while line:
        line = line[os.write(case_fd, line) :]


def _clean_scratch() -> bool:
    """Remove what the last case's FMU left in the writable dirs (its own files are sent
    already), so that each case starts, like a single run, with its disk quota free.
    False when that failed."""

    def kept(name: str) -> bool:
        return name in KEPT_BETWEEN_CASES

    try:
        for directory in SCRATCH_DIRS:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if directory == "." and kept(entry.name):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
    except BaseException:  # a tree too deep, a file it cannot remove: a fresh process
        return False
    return True
