"""A study of 1,000 cases against bare fmpy looping over the same cases.

The baseline is what a careful user writes on a laptop with 2 cores: 2 processes, each
extracting the FMU and reading its description once, then calling
`simulate_fmu(unzipdir, model_description=..., start_values=case)` per case. The naive
loop passes the `.fmu` path on every call, so fmpy extracts and parses it each time.
The gateway runs the same cases as one grid study on its 2 worker slots; its rate is
counted from the study's first chunk starting to its last case ending (the execution),
and, separately, the whole request through the API: POST, wait, summary downloaded.
"""

from __future__ import annotations

import itertools
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

# 40 x 25 = 1,000 cases of the bouncing ball: restitution and gravity.
E_VALUES: dict[str, float | int] = {"start": 0.5, "stop": 0.9, "num": 40}
G_VALUES: dict[str, float | int] = {"start": 9.0, "stop": 10.0, "num": 25}
STUDY_DESIGN = {"kind": "grid", "parameters": {"e": E_VALUES, "g": G_VALUES}}
TARGET_RATIO = 0.8


def grid_cases() -> list[dict[str, float]]:
    """The design's cases as the study builds them: the first parameter varies slowest."""
    axes = [
        np.linspace(values["start"], values["stop"], int(values["num"]))
        for values in (E_VALUES, G_VALUES)
    ]
    return [{"e": float(e), "g": float(g)} for e, g in itertools.product(*axes)]


def careful_loop(fmu: str, cases: list[dict[str, float]]) -> int:
    import fmpy
    from fmpy.model_description import read_model_description

    unzip_dir = fmpy.extract(fmu, unzipdir=tempfile.mkdtemp(prefix="fmugw-bench-"))
    description = read_model_description(unzip_dir, validate=True)
    for case in cases:
        fmpy.simulate_fmu(unzip_dir, model_description=description, start_values=case)
    return len(cases)


def naive_loop(fmu: str, cases: list[dict[str, float]]) -> int:
    import fmpy

    for case in cases:
        fmpy.simulate_fmu(fmu, start_values=case)
    return len(cases)


def loop_rate_in_two_processes(loop, fmu: str, cases: list[dict[str, float]]) -> float:
    """Cases per second of `loop` over `cases`, split in halves over 2 processes; the
    processes' start and imports are outside the timing (a warm-up of 2 cases each), the
    per-process extraction and parsing inside (the loop does it, as a user's would)."""
    halves = [cases[0::2], cases[1::2]]
    # Fresh interpreters: a fork of the bench would inherit its broker connections.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(loop, [(fmu, half[:2]) for half in halves])
        started = time.perf_counter()
        done = sum(pool.starmap(loop, [(fmu, half) for half in halves]))
        return done / (time.perf_counter() - started)


@dataclass(frozen=True)
class StudyTiming:
    cases: int
    execution_seconds: float  # first chunk started -> last case ended
    api_seconds: float  # POST -> finished -> summary downloaded
    summary_rows: int

    @property
    def execution_rate(self) -> float:
        return self.cases / self.execution_seconds


# A few cases first, as a user's earlier study would: the workers' sandboxes have the
# model prepared, as they have for runs of an uploaded model.
WARM_UP_DESIGN = {"kind": "cases", "cases": [{"e": 0.7, "g": 9.81}] * 4}


def study_through_api(session, url: str, model_id: str, design: dict = STUDY_DESIGN) -> StudyTiming:
    """One grid study through the API, waited for by polling, its summary downloaded."""
    started = time.perf_counter()
    response = session.post(
        f"{url}/api/v1/studies",
        json={"model": model_id, "design": design, "base": {}},
    )
    if response.status_code != 202:
        raise RuntimeError(f"bench study refused: {response.status_code} {response.text}")
    study = response.json()
    while study["status"] in ("queued", "running"):
        # As a client would poll (the execution's own times come from the study): at 20 Hz
        # the web and database served the polling on the cores the workers simulate on.
        time.sleep(0.25)
        study = session.get(f"{url}/api/v1/studies/{study['id']}").json()
    if study["status"] != "succeeded" or study["cases"]["succeeded"] != study["cases"]["total"]:
        raise RuntimeError(f"bench study did not succeed: {study}")
    summary = session.get(f"{url}/api/v1/studies/{study['id']}/summary?format=csv")
    summary.raise_for_status()
    api_seconds = time.perf_counter() - started
    execution = datetime.fromisoformat(study["finished_at"]) - datetime.fromisoformat(
        study["started_at"]
    )
    return StudyTiming(
        cases=study["cases"]["total"],
        execution_seconds=execution.total_seconds(),
        api_seconds=api_seconds,
        summary_rows=summary.text.count("\n") - 1,
    )


def report_lines(timing: StudyTiming, careful_rate: float, naive_rate: float) -> list[str]:
    ratio = timing.execution_rate / careful_rate
    verdict = "MET" if ratio >= TARGET_RATIO else "MISSED"
    api_rate = timing.cases / timing.api_seconds
    return [
        f"  study of {timing.cases:,} cases (grid e x g), cases/s with 2 workers"
        " (ratio to the careful fmpy loop in 2 processes):",
        f"    bare fmpy, careful loop (extract once)     {careful_rate:7.1f}   1.00",
        f"    bare fmpy, naive loop (.fmu every call)    {naive_rate:7.1f}   "
        f"{naive_rate / careful_rate:4.2f}",
        f"    gateway study, execution                   {timing.execution_rate:7.1f}   "
        f"{ratio:4.2f}  target >= {TARGET_RATIO:.2f}: {verdict}"
        f"  ({timing.execution_rate / naive_rate:.2f}x the naive loop)",
        f"    gateway study, through the API             {api_rate:7.1f}   "
        f"{api_rate / careful_rate:4.2f}  (POST -> summary of {timing.summary_rows:,} rows"
        f" downloaded: {timing.api_seconds:.2f} s; the careful loop takes"
        f" {timing.cases / careful_rate:.2f} s)",
    ]
