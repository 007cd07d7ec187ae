"""Batches: many cases of one model for one owner in one sandbox job (fmuengine.batch).

Each case must come out as a single run of it would (the same trace as fmpy's own
simulate_fmu, the same error code), whatever the other cases of its batch did."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fmpy
import numpy as np
import pytest

from fmuengine.batch import CANCELLED_MESSAGE, NOT_STARTED_MESSAGE, CaseOutcome, run_batch
from fmuengine.protocol import SandboxLimits, batch_results_file, case_file
from fmuengine.sandbox.cases import KILLED_PROTOCOL, CaseTracker
from fmuengine.tests.sandbox_runs import load_result, run, sha256_of, slot_processes

sandbox = pytest.mark.sandbox
pytestmark = pytest.mark.usefixtures("slot_uids_of_this_test_process")

LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_bytes=256 << 20,
    file_size_bytes=16 << 20,
    max_processes=8,
    wall_timeout_seconds=1.5,
)
NORMAL, CRASH, LOOP, MEMORY_HOG, JUNK = range(5)


def batch(fmu: Path, cases: list[dict], limits: SandboxLimits = LIMITS, **kwargs):
    return run_batch(fmu_path=fmu, cases=cases, limits=limits, model_key=sha256_of(fmu), **kwargs)


def case(mode: int, k: float) -> dict:
    return {"start_values": {"mode": mode, "k": k}}


def assert_same_trace(result: np.ndarray | None, expected: np.ndarray) -> None:
    assert result is not None
    assert result.dtype.names == expected.dtype.names
    assert len(result) == len(expected)
    for name in expected.dtype.names or ():
        np.testing.assert_allclose(result[name], expected[name], rtol=0, atol=1e-9)


def fmpy_trace(fmu: Path, params: dict) -> np.ndarray:
    """The reference: fmpy's simulate_fmu called directly on the .fmu."""
    return fmpy.simulate_fmu(str(fmu), **params)


# ---- traces --------------------------------------------------------------------------------


@sandbox
def test_each_case_has_the_trace_fmpy_gives_for_its_start_values(fmu_paths):
    fmu = fmu_paths["bouncing_ball"]
    cases: list[dict[str, Any]] = [
        {"start_values": {"h": 1.0}},
        {"start_values": {"h": 2.5, "e": 0.5}},
        {"start_values": {"h": 0.3, "v": 1.0, "e": 0.9}},
        {"start_values": {"e": 0.2}, "stop_time": 2, "output_interval": 0.05},
        {"start_values": {"h": 1.7}, "fmi_type": "ModelExchange", "solver": "CVode"},
        {},
    ]

    outcomes = batch(
        fmu, cases, limits=SandboxLimits(**{**LIMITS.__dict__, "memory_bytes": 1 << 30})
    )

    assert [o.index for o in outcomes] == list(range(len(cases)))
    for outcome, params in zip(outcomes, cases, strict=True):
        assert (outcome.status, outcome.error_code) == ("succeeded", None), outcome
        assert_same_trace(outcome.result, fmpy_trace(fmu, params))
        assert not isinstance(outcome.result, np.memmap)  # a copy: its file is gone
        assert outcome.wall_seconds > 0
    assert not np.array_equal(outcomes[0].result["h"], outcomes[1].result["h"])
    # Each case's own instance: a single run of a case gives the same trace.
    assert_same_trace(outcomes[2].result, load_result(run(fmu, cases[2])))


@sandbox
def test_a_result_over_a_mebibyte_streams_through_and_the_next_case_follows(fmu_paths):
    fmu = fmu_paths["bouncing_ball"]
    cases: list[dict[str, Any]] = [
        {"start_values": {"h": 2.0}, "stop_time": 3, "output_interval": 5e-5},
        {"start_values": {"h": 0.5}},
    ]
    limits = SandboxLimits(
        **{**LIMITS.__dict__, "memory_bytes": 1 << 30, "wall_timeout_seconds": 20}
    )

    outcomes = batch(fmu, cases, limits)

    assert [(o.status, o.error_code) for o in outcomes] == [("succeeded", None)] * 2
    assert outcomes[0].result is not None and outcomes[0].result.nbytes > 1 << 20
    for outcome, params in zip(outcomes, cases, strict=True):
        assert_same_trace(outcome.result, fmpy_trace(fmu, params))


# ---- cases that end their process ----------------------------------------------------------


@sandbox
def test_a_crash_a_hang_and_a_memory_hog_fail_only_their_own_cases(fmu_paths):
    fmu = fmu_paths["case_behaviour"]
    modes = {3: CRASH, 5: LOOP, 7: MEMORY_HOG}
    cases = [case(modes.get(index, NORMAL), 0.5 + 0.25 * index) for index in range(10)]
    started = time.monotonic()

    outcomes = batch(fmu, cases)

    assert [o.index for o in outcomes] == list(range(10))
    verdicts = {o.index: (o.status, o.error_code) for o in outcomes}
    assert verdicts[3] == ("failed", "model_crashed")
    assert "SIGSEGV" in outcomes[3].message
    assert "case_behaviour: crashing" in outcomes[3].log_tail
    assert verdicts[5] == ("timed_out", "timeout")
    assert "looping forever" in outcomes[5].log_tail
    assert LIMITS.wall_timeout_seconds <= outcomes[5].wall_seconds < 3
    assert verdicts[7] == ("failed", "memory_limit"), outcomes[7]
    for index in set(range(10)) - set(modes):
        assert verdicts[index] == ("succeeded", None), outcomes[index]
        assert_same_trace(outcomes[index].result, fmpy_trace(fmu, {**cases[index]}))
        assert outcomes[index].log_tail == ""
    for index in modes:
        assert outcomes[index].result is None and outcomes[index].message
    # One per-case timeout, not one per case after it.
    assert time.monotonic() - started < 2 * LIMITS.wall_timeout_seconds + 5
    assert slot_processes() == []
    # The codes single runs of those cases get.
    for index in (3, 7):
        single = run(fmu, cases[index], limits=LIMITS)
        assert (single.status, single.error_code) == verdicts[index]


@sandbox
def test_a_case_over_its_cpu_limit_gets_the_single_runs_code(fmu_paths):
    limits = SandboxLimits(**{**LIMITS.__dict__, "cpu_seconds": 1, "wall_timeout_seconds": 10})

    outcomes = batch(
        fmu_paths["case_behaviour"], [case(NORMAL, 1), case(LOOP, 1), case(NORMAL, 2)], limits
    )

    assert [(o.status, o.error_code) for o in outcomes] == [
        ("succeeded", None),
        ("failed", "cpu_time_exceeded"),
        ("succeeded", None),
    ]
    assert 1 <= outcomes[1].cpu_seconds < 3
    assert outcomes[1].wall_seconds < 5


@sandbox
def test_hostile_output_of_a_case_does_not_poison_the_others(fmu_paths):
    """Case 1 writes junk under every case's file names, on every descriptor it has (the
    marker pipe among them) and control characters into its log, then finishes as a
    normal run: as a single run of it would, it succeeds, and so does every other case."""
    fmu = fmu_paths["case_behaviour"]
    cases = [case(JUNK if index == 1 else NORMAL, 1.0 + index) for index in range(5)]

    outcomes = batch(fmu, cases)

    assert [(o.status, o.error_code) for o in outcomes] == [("succeeded", None)] * 5, outcomes
    for outcome, params in zip(outcomes, cases, strict=True):
        expected = {**params, "start_values": {**params["start_values"], "mode": NORMAL}}
        assert_same_trace(outcome.result, fmpy_trace(fmu, expected))
    assert "case_behaviour: writing junk" in outcomes[1].log_tail
    assert "\x1b" not in outcomes[1].log_tail and "\x01" not in outcomes[1].log_tail
    assert [o.log_tail for o in outcomes[2:]] == ["", "", ""]
    single = run(fmu, cases[1], limits=LIMITS)
    assert single.status == "succeeded"
    single.cleanup()


# ---- streaming and cancelling -------------------------------------------------------------


@sandbox
def test_on_case_gets_every_case_in_index_order_in_the_callers_thread(fmu_paths):
    fmu = fmu_paths["case_behaviour"]
    cases = [case(CRASH if index == 2 else NORMAL, 1.0 + index) for index in range(6)]
    seen: list[tuple[int, int, bool]] = []

    def on_case(outcome: CaseOutcome) -> None:
        seen.append((outcome.index, threading.get_ident(), outcome.result is not None))

    outcomes = batch(fmu, cases, on_case=on_case)

    main = threading.get_ident()
    assert seen == [(index, main, index != 2) for index in range(6)]
    # The caller had each trace in on_case: the returned outcomes do not hold them again.
    assert [o.result for o in outcomes] == [None] * 6
    assert [o.status for o in outcomes] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3


@sandbox
def test_cancel_ends_the_batch_and_leaves_the_rest_cancelled(fmu_paths):
    limits = SandboxLimits(**{**LIMITS.__dict__, "wall_timeout_seconds": 30})
    cases = [case(LOOP if index == 2 else NORMAL, 1.0) for index in range(6)]
    ended: list[int] = []
    started = time.monotonic()

    outcomes = batch(
        fmu_paths["case_behaviour"],
        cases,
        limits,
        on_case=lambda outcome: ended.append(outcome.index),
        should_cancel=lambda: time.monotonic() - started > 1.0,
    )

    assert [(o.status, o.error_code) for o in outcomes] == [("succeeded", None)] * 2 + [
        ("cancelled", "cancelled")
    ] * 4
    # Case 2 was running (and used CPU); the ones after it never started.
    assert outcomes[2].message == CANCELLED_MESSAGE and outcomes[2].cpu_seconds > 0.1
    assert {o.message for o in outcomes[3:]} == {NOT_STARTED_MESSAGE}
    assert ended == list(range(6))
    assert time.monotonic() - started < 4
    assert slot_processes() == []


@sandbox
def test_a_cancel_before_the_first_case_runs_nothing(fmu_paths):
    outcomes = batch(fmu_paths["bouncing_ball"], [{}, {}], should_cancel=lambda: True)

    assert [(o.index, o.status, o.error_code, o.message) for o in outcomes] == [
        (0, "cancelled", "cancelled", NOT_STARTED_MESSAGE),
        (1, "cancelled", "cancelled", NOT_STARTED_MESSAGE),
    ]


def test_malformed_cases_are_refused_before_anything_runs(fmu_paths):
    with pytest.raises(ValueError, match="unknown simulation parameters"):
        batch(fmu_paths["bouncing_ball"], [{}, {"start_value": {"h": 1}}])
    assert batch(fmu_paths["bouncing_ball"], []) == []


# ---- the monitor's reading of the markers ---------------------------------------------------


@dataclass
class Followed:
    """A CaseTracker over a work dir and an out dir, following a stand-in model process,
    and the pipe its markers come through."""

    tracker: CaseTracker
    pipe: tuple[int, int]
    reports: list[dict[str, Any]]
    work: Path
    out: Path

    def feed(self, data: bytes) -> None:
        os.write(self.pipe[1], data)
        self.tracker.read(self.pipe[0])

    def model_alive(self) -> bool:
        try:
            return os.waitpid(self.tracker.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:  # reaped by an earlier look
            return False


@pytest.fixture
def followed(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    model = os.fork()
    if model == 0:
        time.sleep(60)
        os._exit(0)
    reports: list[dict[str, Any]] = []
    tracker = CaseTracker(
        pid=model,
        first_case=4,
        case_count=8,
        wall_timeout=5,
        cpu_limit=5,
        cgroup=None,
        work_fd=os.open(work, os.O_RDONLY | os.O_DIRECTORY),
        out_fd=os.open(out, os.O_RDONLY | os.O_DIRECTORY),
        owner=(os.getuid(), os.getgid()),
        file_size_bytes=1 << 20,
        status=reports.append,
        disk_full=lambda: False,
    )
    pipe = os.pipe()
    yield Followed(tracker, pipe, reports, work, out)
    tracker.close()
    for fd in pipe:
        os.close(fd)
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(model, 9)
        os.waitpid(model, 0)


def test_markers_in_order_copy_each_case_out_and_junk_lines_are_skipped(followed):
    work, out, tracker = followed.work, followed.out, followed.tracker
    (work / "fmu.log").write_text("an earlier line\n")

    followed.feed(b"\ns 4\n")
    with open(work / "fmu.log", "a") as log:
        log.write("said during case 4\n")
    size = (work / "fmu.log").stat().st_size
    followed.feed(b"junk \x01\x02\ne 0 0 junk\n99999\n\ns\n" + b"x" * 500 + b"\n")
    # A case's end, then its result; the next case's start; it writes a log line at once.
    followed.feed(b"\ne 4 0 20 0 %d\nthe result" % size)
    followed.feed(b" of case 4s 5\n")
    with open(work / "fmu.log", "a") as log:
        log.write("said during case 5\n")
    followed.feed(b"\ne 5 113 0 12 0\n{bad report}\ns 6\n")

    first, second = followed.reports
    assert (first["case"], first["exit_code"], second["case"]) == (4, 0, 5)
    # The result in the job's one results file; the log up to where the case said.
    assert first["outputs"] == {"npy": "copied", "at": 0, "bytes": 20, "log": "copied"}
    assert (out / batch_results_file(4)).read_bytes() == b"the result of case 4"
    assert (out / case_file(4, "log")).read_text() == "an earlier line\nsaid during case 4\n"
    assert second["outputs"] == {"error.json": "copied", "log": "absent"}
    assert (out / case_file(5, "error.json")).read_bytes() == b"{bad report}"
    assert tracker.current == 6 and tracker.killed_by is None
    assert followed.model_alive()


def test_a_result_over_the_file_size_limit_is_read_and_dropped(followed):
    followed.feed(b"\ns 4\ne 4 0 %d 0 0\n" % ((1 << 20) + 1))
    for _ in range(16):
        followed.feed(b"x" * (1 << 16))
    followed.feed(b"x\ns 5\n")

    [report] = followed.reports
    assert report["outputs"]["npy"] == "too_large"
    assert not (followed.out / batch_results_file(4)).exists()
    assert followed.tracker.current == 5 and followed.tracker.killed_by is None


@pytest.mark.parametrize(
    "forged",
    [
        b"\ns 4\ne 5 0 0 0 0\n",  # the end of a case that is not running
        b"\ns 4\ns 5\n",  # a start before the running case ended
        b"\ns 6\n",  # a case skipped
        b"\ns 4\ne 4 0 0 0 0\ns 4\n",  # a case run twice
        b"\ns 4\ne 4 0 -5 0 0\n",  # a negative size
        b"".join(b"s %d\ne %d 0 0 0 0\n" % (i, i) for i in range(4, 8)) + b"s 8\n",  # past the end
    ],
)
def test_a_forged_marker_ends_the_job_as_a_protocol_violation(followed, forged):
    followed.feed(forged)

    assert followed.tracker.killed_by == KILLED_PROTOCOL
    deadline = time.monotonic() + 5
    while followed.model_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not followed.model_alive()


def test_a_case_past_its_wall_clock_limit_is_killed(followed):
    followed.feed(b"\ns 4\n")
    followed.tracker.deadline = time.monotonic() - 0.01

    followed.tracker.enforce()

    assert followed.tracker.killed_by == "timeout"
    assert followed.tracker.finish()["current_case"] == 4
    assert followed.tracker.finish()["case_killed_by"] == "timeout"
