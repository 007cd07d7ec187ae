"""run_simulation: results equal plain fmpy, and hostile models end as failed or timed
out with a clear error while this (calling) process keeps running good jobs."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fmpy
import numpy as np
import psutil
import pytest

from fmuengine import runner, sandbox_client
from fmuengine.runner import SandboxLimits, SandboxOutcome, isolation_level
from fmuengine.sandbox.isolation import python_library_dirs
from fmuengine.tests.fmus.build import TEST_MODELS, shifted
from fmuengine.tests.sandbox_runs import load_result, run, sha256_of, slot_processes

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("slot_uids_of_this_test_process")]

HOSTILE_LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_bytes=512 << 20,
    file_size_bytes=16 << 20,
    max_processes=8,
    wall_timeout_seconds=2,
)
SECRET_VARIABLE = "FMUGW_TEST_SECRET"
SECRET_VALUE = f"secret-{secrets.token_hex(8)}"


@pytest.fixture(scope="module", autouse=True)
def secret_in_worker_environment():
    """A secret in the calling process's environment, as SECRET_KEY is in a worker's.
    Set before this module's first run (the sandbox server may start then)."""
    previous = os.environ.get(SECRET_VARIABLE)
    os.environ[SECRET_VARIABLE] = SECRET_VALUE
    yield
    if previous is None:
        del os.environ[SECRET_VARIABLE]
    else:
        os.environ[SECRET_VARIABLE] = previous


def assert_same_result(sandboxed: np.ndarray, direct: np.ndarray) -> None:
    assert sandboxed.dtype.names == direct.dtype.names
    assert direct.dtype.names is not None
    assert len(sandboxed) == len(direct)
    for name in direct.dtype.names:
        np.testing.assert_allclose(sandboxed[name], direct[name], rtol=0, atol=1e-9)


def assert_good_job_still_runs(fmu_paths) -> None:
    outcome = run(fmu_paths["bouncing_ball"])
    assert len(load_result(outcome)) == 301


def assert_failed(outcome: SandboxOutcome, status: str, error_code: str) -> None:
    assert (outcome.status, outcome.error_code) == (status, error_code), (
        outcome.message,
        outcome.log_tail,
    )
    assert outcome.result_path is None
    assert outcome.message


# ---- same results as fmpy itself --------------------------------------------------


@pytest.mark.parametrize("model_key", ["the FMU's sha256", None])
@pytest.mark.parametrize("fmi_type", ["CoSimulation", "ModelExchange"])
def test_bouncing_ball_result_equals_fmpy(fmu_paths, fmi_type, model_key):
    params = {"fmi_type": fmi_type}
    fmu = fmu_paths["bouncing_ball"]
    key = sha256_of(fmu) if model_key else None

    sandboxed = load_result(run(fmu, params, model_key=key))

    direct = fmpy.simulate_fmu(str(fmu), **params)
    assert_same_result(sandboxed, direct)


def test_fmi3_bouncing_ball_result_equals_fmpy(fmu_paths):
    params = {"stop_time": 2.0, "output_interval": 0.02, "start_values": {"h": 1.5}}

    sandboxed = load_result(run(fmu_paths["bouncing_ball3"], params))

    direct = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball3"]), **params)
    assert_same_result(sandboxed, direct)
    assert len(direct) == 101


def test_fmi1_bouncing_ball_result_equals_fmpy(fmu_paths):
    params = {"stop_time": 2.0, "output_interval": 0.02, "start_values": {"h": 1.5, "e": 0.8}}

    sandboxed = load_result(run(fmu_paths["bouncing_ball1"], params))

    direct = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball1"]), **params)
    assert_same_result(sandboxed, direct)
    assert len(direct) == 101
    assert direct["h"][0] == 1.5
    assert direct["h"].min() < 0.1  # it did fall and bounce


@pytest.mark.parametrize(
    ("fmi_type", "solver"),
    [("ModelExchange", "CVode"), ("ModelExchange", "Euler"), ("CoSimulation", None)],
)
def test_inputs_and_start_values_result_equals_fmpy(fmu_paths, fmi_type, solver):
    table: dict[str, Any] = {
        "columns": ["time", "u"],
        "rows": [[0, 0], [0.5, 0], [0.5, 1], [1.0, 3], [2, 3]],
    }
    params = {
        "fmi_type": fmi_type,
        "start_time": 0.0,
        "stop_time": 2.0,
        "output_interval": 0.05,
        "step_size": 0.001,
        "relative_tolerance": 1e-6,
        "start_values": {"k": 2.0, "T": 0.4, "x": 0.25},
        "input": table,
        "output": ["y", "u"],
    }
    if solver:
        params["solver"] = solver

    sandboxed = load_result(run(fmu_paths["inputs_params"], params))

    input_array = np.array(
        [tuple(row) for row in table["rows"]], dtype=[("time", "<f8"), ("u", "<f8")]
    )
    direct = fmpy.simulate_fmu(str(fmu_paths["inputs_params"]), **{**params, "input": input_array})
    assert_same_result(sandboxed, direct)
    assert set(sandboxed.dtype.names or ()) == {"time", "y", "u"}
    assert sandboxed["y"][0] == pytest.approx(0.25)


# ---- the server's extracted copies -----------------------------------------------------

namespaces_only = pytest.mark.skipif(
    "namespaces" not in isolation_level(),
    reason="the server shares extracted FMUs only with runs in a private mount tree",
)


@namespaces_only
def test_the_second_run_of_an_fmu_uses_the_servers_extracted_copy(fmu_paths):
    fmu = fmu_paths["inputs_params"]
    params = {"fmi_type": "CoSimulation", "start_values": {"k": 3.0}}

    first = run(fmu, params)
    second = run(fmu, params)

    assert first.model_cache in ("miss", "hit")  # an earlier test may have run it
    assert second.model_cache == "hit"
    direct = fmpy.simulate_fmu(str(fmu), **params)
    assert_same_result(load_result(first), direct)
    assert_same_result(load_result(second), direct)


@namespaces_only
def test_a_key_that_is_not_the_files_sha256_is_not_trusted(fmu_paths):
    """The runner keys the cache by the sha256 it computes while copying the file, not
    by what its caller says, so a wrong key cannot fetch another model's copy."""
    load_result(run(fmu_paths["bouncing_ball"]))
    someone_elses_key = sha256_of(fmu_paths["bouncing_ball"])

    outcome = run(fmu_paths["bouncing_ball3"], model_key=someone_elses_key)

    assert_same_result(load_result(outcome), fmpy.simulate_fmu(str(fmu_paths["bouncing_ball3"])))


@namespaces_only
def test_a_run_cannot_change_the_extracted_copy_the_next_run_gets(fmu_paths):
    fmu = fmu_paths["tamper_fmu"]

    outcomes = [run(fmu), run(fmu)]

    for outcome in outcomes:
        assert outcome.status == "succeeded", outcome.log_tail
        assert "tamper: modified" not in outcome.log_tail
        assert "/model/fmu/binaries/" in outcome.log_tail
        assert "Read-only file system" in outcome.log_tail
        outcome.cleanup()
    assert outcomes[1].model_cache == "hit"
    extracted = list((sandbox_client.settings.run_root / "models").glob(f"*/{sha256_of(fmu)}"))
    assert extracted
    for copy in extracted:
        assert not list(copy.rglob("tampered.txt"))


@namespaces_only
def test_a_run_finds_its_own_model_description_in_its_memory(fmu_paths):
    needle = TEST_MODELS["memory_scan"].description

    outcome = run(fmu_paths["memory_scan"], {"start_values": {"shifted_needle": shifted(needle)}})

    assert outcome.status == "succeeded", outcome.log_tail
    assert "memory_scan: found" in outcome.log_tail


@namespaces_only
def test_a_run_finds_nothing_of_the_models_run_before_it_in_its_memory(fmu_paths):
    other_model = TEST_MODELS["inputs_params"]
    load_result(run(fmu_paths["inputs_params"], {"fmi_type": "CoSimulation"}))
    needle = {"start_values": {"shifted_needle": shifted(other_model.description)}}

    outcomes = [run(fmu_paths["memory_scan"], needle) for _ in range(2)]  # miss, then hit

    for outcome in outcomes:
        assert outcome.status == "succeeded", outcome.log_tail
        assert "memory_scan: not found" in outcome.log_tail
    assert outcomes[1].model_cache == "hit"


@pytest.mark.parametrize("limit", ["entries", "bytes"])
def test_the_model_cache_drops_the_least_recently_used_model_beyond_its_limits(
    tmp_path, monkeypatch, limit
):
    from fmuengine.sandbox import model_cache

    cache = model_cache.ModelCache(str(tmp_path))

    def prepared(key: str) -> str:
        target = cache.target(key)
        os.makedirs(os.path.join(target, "fmu"))
        Path(target, "description.pickle").write_bytes(b"x" * 1000)
        return cache.add(key, target)

    first_key, second_key = "a" * 64, "b" * 64
    first = prepared(first_key)
    if limit == "entries":
        monkeypatch.setattr(model_cache, "MODEL_CACHE_ENTRIES", 1)
    else:  # room for the first model only
        monkeypatch.setattr(model_cache, "MODEL_CACHE_MAX_TOTAL_BYTES", 1500)

    prepared(second_key)

    assert list(cache.entries) == [second_key]
    assert not Path(first).exists()
    assert cache.get(first_key) is None


def test_an_fmu_the_server_cannot_prepare_is_reported_by_the_run_as_before(tmp_path):
    not_an_fmu = tmp_path / "broken.fmu"
    not_an_fmu.write_bytes(b"PK\x03\x04 but not really a zip")

    outcome = run(not_an_fmu)

    assert outcome.model_cache in ("unprepared", "off")
    assert_failed(outcome, "failed", "invalid_fmu")


@namespaces_only
def test_a_new_server_removes_what_a_killed_server_left_behind(fmu_paths):
    run(fmu_paths["bouncing_ball"]).cleanup()
    models_root = sandbox_client.settings.run_root / "models"
    abandoned = models_root / "server-1-deadbeef"
    abandoned.mkdir()
    (abandoned / ".lock").touch()
    (abandoned / ("0" * 64)).mkdir()

    connection = sandbox_client.SandboxConnection()
    connection.kill()

    assert not abandoned.exists()
    assert len(list(models_root.iterdir())) >= 1  # the live servers' own dirs stay


# ---- processes forked ahead ------------------------------------------------------------


def waiting_spare_of(server_pid: int, timeout: float = 10.0) -> psutil.Process:
    """The model process a server's zygote forked ahead for its next run, waiting as
    root: server -> zygote -> monitor -> model process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):  # a spare may end while we look
            for zygote in psutil.Process(server_pid).children():
                for monitor in zygote.children():
                    for process in monitor.children():
                        if process.uids().real == os.geteuid():
                            return process
        time.sleep(0.05)
    raise AssertionError("no spare run process appeared")


@namespaces_only
def test_a_run_gets_the_process_forked_ahead_for_it_and_never_a_used_one(fmu_paths):
    server = sandbox_client.connection_pool.take()
    sandbox_client.connection_pool.give_back(server)
    assert server.process is not None
    server_pid = server.process.pid
    model_pids: list[int] = []

    def note_model_pid() -> bool:
        first = sandbox_client.settings.slot_uid_base
        for process in psutil.Process(server_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if first <= process.uids().real < first + runner.DEFAULT_SLOT_COUNT:
                    model_pids.append(process.pid)
        return False

    short = SandboxLimits(**{**HOSTILE_LIMITS.__dict__, "wall_timeout_seconds": 1})
    run(fmu_paths["endless_loop"], limits=short)  # prepared now: a miss takes a spare too
    spares = []
    for _ in range(2):
        spares.append(waiting_spare_of(server_pid).pid)
        outcome = run(
            fmu_paths["endless_loop"],
            limits=SandboxLimits(**{**HOSTILE_LIMITS.__dict__, "wall_timeout_seconds": 1}),
            should_cancel=note_model_pid,
        )
        assert outcome.status == "timed_out"

    assert set(model_pids) == set(spares)
    assert spares[0] != spares[1]


@namespaces_only
def test_a_stopped_server_leaves_no_spare_behind():
    server = sandbox_client.SandboxConnection()
    assert server.process is not None
    spare = waiting_spare_of(server.process.pid)
    monitor = psutil.Process(spare.ppid())

    server.kill()

    for process in (spare, monitor):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.wait(timeout=5)
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


def test_progress_is_reported_increasing_and_at_most_one(fmu_paths):
    reported: list[float] = []
    params = {"fmi_type": "CoSimulation", "output_interval": 1e-5}

    outcome = run(fmu_paths["bouncing_ball"], params, on_progress=reported.append)

    assert len(load_result(outcome)) == 300_001
    assert len(reported) >= 2, reported
    assert all(later > earlier for earlier, later in itertools.pairwise(reported))
    assert reported[0] > 0 and reported[-1] <= 1


def test_runs_from_several_threads_at_once_use_separate_servers_and_slots(fmu_paths):
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda _: run(fmu_paths["bouncing_ball"]), range(6)))

    for outcome in outcomes:
        assert len(load_result(outcome)) == 301


def test_unknown_variable_fails_with_a_clear_message(fmu_paths):
    outcome = run(fmu_paths["bouncing_ball"], {"start_values": {"no_such_variable": 1}})

    assert_failed(outcome, "failed", "invalid_parameters")
    assert "no_such_variable" in outcome.message


def test_model_error_during_initialization_is_reported_with_its_log(fmu_paths):
    outcome = run(fmu_paths["inputs_params"], {"start_values": {"T": 0.0}})

    assert_failed(outcome, "failed", "model_error")
    assert "T must be > 0" in outcome.log_tail


def test_malformed_params_are_refused_before_running(fmu_paths):
    with pytest.raises(ValueError, match="unknown simulation parameters"):
        run(fmu_paths["bouncing_ball"], {"stop_tme": 1})


def test_isolation_level_names_the_active_measures():
    level = isolation_level()

    if os.geteuid() == 0:
        assert level == "namespaces+setuid+cgroups+disk-quota+seccomp+rlimits"
    else:
        assert level.endswith("rlimits")


# ---- hostile models ------------------------------------------------------------------


def test_segfault_is_reported_as_a_crash(fmu_paths):
    outcome = run(fmu_paths["segfault"], limits=HOSTILE_LIMITS)

    assert_failed(outcome, "failed", "model_crashed")
    assert "SIGSEGV" in outcome.message
    assert "segfault: writing through a null pointer" in outcome.log_tail
    assert_good_job_still_runs(fmu_paths)


def test_exit_early_is_reported_with_its_exit_code(fmu_paths):
    outcome = run(fmu_paths["exit_early"], limits=HOSTILE_LIMITS)

    assert_failed(outcome, "failed", "model_exited")
    assert "exit code 3" in outcome.message
    assert "exit_early: calling _exit(3)" in outcome.log_tail
    assert_good_job_still_runs(fmu_paths)


def test_endless_loop_times_out_on_the_wall_clock(fmu_paths):
    started = time.monotonic()

    outcome = run(fmu_paths["endless_loop"], limits=HOSTILE_LIMITS)

    assert_failed(outcome, "timed_out", "timeout")
    assert HOSTILE_LIMITS.wall_timeout_seconds <= time.monotonic() - started < 4
    assert "endless_loop: entering an endless loop" in outcome.log_tail
    # Its CPU time until the kill is measured (a share of one CPU on a busy 2-core box).
    assert outcome.cpu_seconds > 0.2 * HOSTILE_LIMITS.wall_timeout_seconds
    assert slot_processes() == []
    assert_good_job_still_runs(fmu_paths)


def test_endless_loop_is_stopped_by_the_cpu_limit(fmu_paths):
    limits = SandboxLimits(
        cpu_seconds=1,
        memory_bytes=512 << 20,
        file_size_bytes=16 << 20,
        max_processes=8,
        wall_timeout_seconds=10,
    )

    outcome = run(fmu_paths["endless_loop"], limits=limits)

    assert_failed(outcome, "failed", "cpu_time_exceeded")
    assert outcome.wall_seconds < 5
    assert_good_job_still_runs(fmu_paths)


def test_cancel_kills_an_endless_loop_quickly(fmu_paths):
    started = time.monotonic()
    limits = SandboxLimits(
        cpu_seconds=30,
        memory_bytes=512 << 20,
        file_size_bytes=16 << 20,
        max_processes=8,
        wall_timeout_seconds=30,
    )

    outcome = run(
        fmu_paths["endless_loop"],
        limits=limits,
        should_cancel=lambda: time.monotonic() - started > 0.5,
    )

    assert_failed(outcome, "cancelled", "cancelled")
    assert time.monotonic() - started < 1.5
    assert slot_processes() == []
    assert_good_job_still_runs(fmu_paths)


def test_memory_hog_runs_out_of_memory(fmu_paths):
    outcome = run(fmu_paths["memory_hog"], limits=HOSTILE_LIMITS)

    assert_failed(outcome, "failed", "memory_limit")
    assert "memory_hog: malloc failed after" in outcome.log_tail
    assert_good_job_still_runs(fmu_paths)


def test_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind(fmu_paths):
    outcome = run(fmu_paths["fork_bomb"], limits=HOSTILE_LIMITS)

    assert outcome.status in ("failed", "timed_out"), outcome.log_tail
    assert outcome.result_path is None
    children = int(outcome.log_tail.split("fork failed after ")[1].split()[0])
    assert children < HOSTILE_LIMITS.max_processes
    assert slot_processes() == []
    assert_good_job_still_runs(fmu_paths)


def test_open_socket_cannot_reach_a_local_server(fmu_paths):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]

        outcome = run(
            fmu_paths["open_socket"], {"start_values": {"port": port}}, limits=HOSTILE_LIMITS
        )

        with pytest.raises(TimeoutError):
            listener.accept()
    assert_failed(outcome, "failed", "model_error")
    assert "socket blocked:" in outcome.log_tail
    assert "socket connected" not in outcome.log_tail
    assert_good_job_still_runs(fmu_paths)


def test_read_secrets_sees_no_secrets(fmu_paths):
    # Another process with the secret in its environment, as the worker would have.
    helper = subprocess.Popen(["sleep", "30"], env={SECRET_VARIABLE: SECRET_VALUE})
    try:
        outcome = run(
            fmu_paths["read_secrets"],
            {"start_values": {"env_name": SECRET_VARIABLE, "probe_pid": helper.pid}},
            limits=HOSTILE_LIMITS,
        )
    finally:
        helper.kill()
        helper.wait()

    assert_failed(outcome, "failed", "model_error")
    assert "read_secrets: could not read:" in outcome.log_tail
    assert "could not read /etc/passwd" in outcome.log_tail
    assert f"getenv({SECRET_VARIABLE}) is not set" in outcome.log_tail
    assert "environ has 0 entries" in outcome.log_tail
    assert SECRET_VALUE not in outcome.log_tail
    assert "root:x:0" not in outcome.log_tail
    assert_good_job_still_runs(fmu_paths)


def test_read_secrets_sees_only_its_own_files(fmu_paths):
    outcome = run(fmu_paths["read_secrets"], limits=HOSTILE_LIMITS)

    listing = outcome.log_tail.split("read_secrets: / contains:")[1].splitlines()[0].split()
    if os.geteuid() == 0:
        # The system dirs, the run's own dir, and the top of the Python library dirs
        # (e.g. /root for a pyenv interpreter, holding nothing but that interpreter's lib).
        allowed = {".", "..", "sandbox", "model", "proc", "dev", "etc", "tmp", "usr", "bin"}
        allowed |= {"sbin"}
        allowed |= {"lib", "lib32", "lib64", "libx32"}
        allowed |= {Path(path).parts[1] for path in python_library_dirs()}
        assert "sandbox" in listing
        assert set(listing) <= allowed, listing
        # Only the interpreter's library dirs are mounted, so a top-level dir such as
        # /work appears only when the venv lives under it.
        library_tops = {Path(path).parts[1] for path in python_library_dirs()}
        for private in ("work", "home", "var"):
            assert private not in listing or private in library_tops, listing


def test_a_dead_sandbox_server_is_a_platform_error_and_is_replaced(fmu_paths):
    killed: list[int] = []

    def kill_sandbox_server() -> bool:
        """Kill the server running this job: the one with a process under a slot uid
        (idle servers have at most a spare, which waits as root)."""
        first = sandbox_client.settings.slot_uid_base
        if not killed:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    if "fmuengine.sandbox" not in " ".join(child.cmdline()):
                        continue
                    if any(
                        first <= process.uids().real < first + runner.DEFAULT_SLOT_COUNT
                        for process in child.children(recursive=True)
                    ):
                        os.kill(child.pid, signal.SIGKILL)
                        killed.append(child.pid)
                        break
        return False

    outcome = run(
        fmu_paths["endless_loop"], limits=HOSTILE_LIMITS, should_cancel=kill_sandbox_server
    )

    assert killed
    assert_failed(outcome, "platform_error", "sandbox_failed")
    assert slot_processes() == []
    assert_good_job_still_runs(fmu_paths)


def test_no_run_starts_while_the_run_root_has_less_free_disk_than_the_threshold(fmu_paths):
    previous = sandbox_client.settings.min_free_disk_bytes
    runner.configure(min_free_disk_bytes=1 << 60)
    try:
        status = runner.sandbox_status()
        outcome = run(fmu_paths["bouncing_ball"])
    finally:
        runner.configure(min_free_disk_bytes=previous)

    assert not status.ready
    assert "MiB free under" in status.reason
    assert_failed(outcome, "platform_error", "sandbox_failed")
    assert outcome.log_tail == ""  # no model code ran
    assert runner.sandbox_status().ready


def test_a_sweep_leaves_a_finished_runs_result_until_cleanup_and_takes_abandoned_dirs(
    fmu_paths, monkeypatch
):
    outcome = run(fmu_paths["bouncing_ball"])
    assert outcome.run_dir is not None and outcome.result_path is not None
    abandoned = sandbox_client.settings.run_root / "run-abandoned"
    (abandoned / "out").mkdir(parents=True)
    (abandoned / ".lock").touch()
    long_ago = time.time() - 2 * runner.SWEEP_INTERVAL_SECONDS
    for path in (outcome.run_dir, abandoned):
        os.utime(path, (long_ago, long_ago))
    monkeypatch.setattr(runner, "_next_sweep", 0.0)

    runner._sweep_abandoned_run_dirs()  # as another worker process starting up would

    assert not abandoned.exists()
    assert outcome.result_path.exists()  # still locked by its run until cleanup()
    assert len(load_result(outcome)) == 301
    assert not outcome.run_dir.exists()
