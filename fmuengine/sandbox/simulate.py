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
import sys
import time
from pathlib import Path
from typing import Any

from fmuengine.protocol import (
    ERROR_FILE,
    EXTRACT_DIR,
    MODEL_FILE,
    MODEL_MOUNT_POINT,
    REPORTED_FAILURE_EXIT_CODE,
    RESULT_FILE,
    RunErrorCode,
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


def _report_failure(code: str, message: str) -> int:
    print(f"[sandbox] {message}", file=sys.stderr)
    with contextlib.suppress(OSError), open(ERROR_FILE, "w") as error_file:
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


def simulate_in_sandbox(params: dict[str, Any], progress_fd: int, prepared: bool) -> int:
    """Simulate the FMU (the server's prepared copy, or model.fmu in the cwd, extracted
    and checked here); write result.npy. Returns the exit code for the model process."""
    import fmpy
    import numpy as np
    from fmpy.fmi1 import FMICallException

    try:
        if prepared:
            unzip_dir = os.path.join(MODEL_MOUNT_POINT, PREPARED_FILES)
            model_description = _load_prepared_description()
        else:
            unzip_dir = os.path.abspath(EXTRACT_DIR)
            model_description = _extract_and_read(MODEL_FILE, unzip_dir)
    except MemoryError:
        return _report_failure(
            RunErrorCode.MEMORY_LIMIT, "The FMU could not be read within the memory limit."
        )
    except Exception as error:
        return _report_failure(RunErrorCode.INVALID_FMU, f"The FMU could not be read: {error}")

    variables = {variable.name: variable for variable in model_description.modelVariables}
    start_values = params.get("start_values") or {}
    output = params.get("output") or None
    input_table = params.get("input") or None
    input_names = list(input_table["columns"][1:]) if input_table else []
    unknown = [
        name for name in [*start_values, *(output or []), *input_names] if name not in variables
    ]
    if unknown:
        return _report_failure(
            RunErrorCode.INVALID_PARAMETERS, f"Unknown variable(s): {', '.join(unknown[:10])}."
        )
    fmi_type = params.get("fmi_type")
    if fmi_type == "ModelExchange" and model_description.modelExchange is None:
        return _report_failure(
            RunErrorCode.INVALID_PARAMETERS, "The model does not support ModelExchange."
        )
    if fmi_type == "CoSimulation" and model_description.coSimulation is None:
        return _report_failure(
            RunErrorCode.INVALID_PARAMETERS, "The model does not support CoSimulation."
        )

    input_signals = None
    if input_table:
        dtype = [("time", "<f8")] + [
            (name, _numpy_type_for(variables[name].type)) for name in input_names
        ]
        try:
            input_signals = np.array([tuple(row) for row in input_table["rows"]], dtype=dtype)
        except (TypeError, ValueError) as error:
            return _report_failure(
                RunErrorCode.INVALID_PARAMETERS, f"The input table is not valid: {error}"
            )

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
            step_finished=step_finished,
            **keyword_arguments,
        )
        np.save(RESULT_FILE, np.asarray(result), allow_pickle=False)
    except MemoryError:
        return _report_failure(RunErrorCode.MEMORY_LIMIT, "The model ran out of memory.")
    except FMICallException as error:
        label = FMI_STATUS_LABELS[error.status] if error.status in range(6) else str(error.status)
        if _near_memory_limit():
            return _report_failure(
                RunErrorCode.MEMORY_LIMIT,
                f"The model ran out of memory ({error.function} returned {label}).",
            )
        return _report_failure(
            RunErrorCode.MODEL_ERROR, f"The model returned status {label} from {error.function}."
        )
    except OSError as error:
        if error.errno == errno.ENOSPC:
            return _report_failure(RunErrorCode.DISK_LIMIT, "The run exceeded its disk quota.")
        if error.errno == errno.EFBIG:
            return _report_failure(
                RunErrorCode.FILE_SIZE_EXCEEDED, "The run exceeded its file size limit."
            )
        return _report_failure(RunErrorCode.MODEL_ERROR, f"The simulation failed: {error}")
    except Exception as error:
        if _near_memory_limit():
            return _report_failure(
                RunErrorCode.MEMORY_LIMIT, f"The model ran out of memory: {error}"
            )
        return _report_failure(RunErrorCode.MODEL_ERROR, f"The simulation failed: {error}")
    return 0
