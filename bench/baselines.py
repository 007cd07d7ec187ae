"""fmpy without the gateway: in-process, one forked process per run, and the CLI."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FMPY_CLI = str(Path(sys.executable).parent / "fmpy")


def simulate_in_process(fmu: str, /, **arguments) -> None:
    import fmpy

    fmpy.simulate_fmu(fmu, **arguments)


def simulate_with_cli(fmu: str) -> None:
    subprocess.run([FMPY_CLI, "simulate", fmu], check=True, capture_output=True)


def _forked_runs(fmu: str, count: int) -> None:
    """What the sandbox does at the least: a pre-imported parent that has the FMU
    extracted and its description parsed forks one child per run, which simulates
    and exits. No namespaces, no uid switch, no result file: the ceiling of any
    design that gives each run its own process."""
    import fmpy
    from fmpy.model_description import read_model_description

    unzip_dir = fmpy.extract(fmu, unzipdir=tempfile.mkdtemp(prefix="fmugw-bench-"))
    description = read_model_description(unzip_dir, validate=True)
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                fmpy.simulate_fmu(unzip_dir, model_description=description)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _pool():
    # Fresh interpreters: a fork of the bench would inherit its broker connections.
    return multiprocessing.get_context("spawn").Pool(2)


def rate_in_two_processes(action, fmu: str, runs: int) -> float:
    """Runs per second of `action(fmu)` in a pool of 2 processes (after a warm-up)."""
    with _pool() as pool:
        pool.map(action, [fmu] * 4)  # imports in both processes
        started = time.perf_counter()
        pool.map(action, [fmu] * runs)
        return runs / (time.perf_counter() - started)


def forked_rate_in_two_processes(fmu: str, runs: int) -> float:
    with _pool() as pool:
        pool.starmap(_forked_runs, [(fmu, 2)] * 2)  # warm-up
        started = time.perf_counter()
        pool.starmap(_forked_runs, [(fmu, runs // 2)] * 2)
        return (runs // 2 * 2) / (time.perf_counter() - started)
