"""Runs through the sandbox as a worker makes them, for the engine's sandbox tests
(test_sandbox.py, test_sandbox_isolation.py): the runner's own entry point, the FMU's
sha256 as its key, the result loaded and its run dir cleaned up."""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import numpy as np
import psutil

from fmuengine import runner, sandbox_client
from fmuengine.runner import SandboxLimits, SandboxOutcome, run_simulation

LIMITS = SandboxLimits(
    cpu_seconds=20,
    memory_bytes=1 << 30,
    file_size_bytes=64 << 20,
    max_processes=16,
    wall_timeout_seconds=30,
)


@functools.cache
def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(fmu_path: Path, params: dict | None = None, limits: SandboxLimits = LIMITS, **kwargs):
    """A run as the worker makes it: with the FMU's sha256, so the server may reuse its
    extracted copy. `model_key=None` makes the run extract the FMU itself."""
    kwargs.setdefault("model_key", sha256_of(fmu_path))
    return run_simulation(fmu_path=fmu_path, params=params or {}, limits=limits, **kwargs)


def load_result(outcome: SandboxOutcome) -> np.ndarray:
    assert outcome.status == "succeeded", (outcome.error_code, outcome.message, outcome.log_tail)
    assert outcome.result_path is not None
    result = np.load(outcome.result_path, allow_pickle=False)
    outcome.cleanup()
    assert not outcome.result_path.exists()
    return result


def slot_processes(settle_seconds: float = 2.0) -> list[psutil.Process]:
    """Live processes under a sandbox slot uid, after letting kills settle. Zombies do
    not count: a model process orphaned by a killed server is reaped by the host's init."""
    first = sandbox_client.settings.slot_uid_base
    deadline = time.monotonic() + settle_seconds
    while True:
        remaining = [
            process
            for process in psutil.process_iter(["uids", "status"])
            if process.info["uids"]
            and first <= process.info["uids"].real < first + runner.DEFAULT_SLOT_COUNT
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not remaining or time.monotonic() > deadline:
            return remaining
        time.sleep(0.05)
