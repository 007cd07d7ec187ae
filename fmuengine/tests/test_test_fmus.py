"""The test FMUs themselves: good models give sane physics under plain fmpy, and
the hostile ones really do their bad thing when nothing confines them (so that the
sandbox tests, which expect them to be stopped, can fail)."""

from __future__ import annotations

import math
import os
import random
import resource
import socket
import subprocess
import sys
from pathlib import Path

import fmpy
import numpy as np
import pytest

from fmuengine.tests.fmus.build import TEST_MODELS, shifted

GRAVITY = 9.81


def simulate_capturing_log(fmu_path: Path, **kwargs) -> tuple[np.ndarray | None, list[str]]:
    """Simulate in this process and collect the FMU's log messages."""
    messages: list[str] = []

    def logger(component, instance_name, status, category, message) -> None:
        messages.append(message.decode(errors="replace"))

    try:
        result = fmpy.simulate_fmu(str(fmu_path), logger=logger, **kwargs)
    except Exception:
        return None, messages
    return result, messages


def first_bounce_index(result: np.ndarray) -> int:
    return int(np.argmax(np.diff(result["v"]) > 0)) + 1


@pytest.mark.parametrize("fmi_type", ["CoSimulation", "ModelExchange"])
def test_bouncing_ball_falls_bounces_and_comes_to_rest(fmu_paths, fmi_type):
    result = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball"]), fmi_type=fmi_type)

    assert result["time"][0] == 0 and result["time"][-1] == pytest.approx(3.0)
    assert result["h"].min() >= -1e-6
    bounce = first_bounce_index(result)
    # Free fall from 1 m reaches the floor after sqrt(2 h / g).
    assert result["time"][bounce] == pytest.approx(math.sqrt(2 / GRAVITY), abs=0.02)
    # It leaves the floor with e * v and rises to e^2 * 1 m.
    after = result[bounce:]
    peak = after["h"][: int(np.argmax(after["v"] < 0)) + 1].max()
    assert peak == pytest.approx(0.7**2, abs=0.02)
    assert result["h"][-1] == pytest.approx(0.0, abs=1e-3)
    assert result["v"][-1] == pytest.approx(0.0, abs=1e-3)


def test_bouncing_ball_start_values_change_the_flight(fmu_paths):
    result = fmpy.simulate_fmu(
        str(fmu_paths["bouncing_ball"]), start_values={"h": 2.0, "e": 0.5}, fmi_type="ModelExchange"
    )

    bounce = first_bounce_index(result)
    assert result["time"][bounce] == pytest.approx(math.sqrt(4 / GRAVITY), abs=0.02)
    assert result["h"][bounce:].max() == pytest.approx(0.5**2 * 2.0, abs=0.02)


def test_fmi3_bouncing_ball_matches_the_fmi2_co_simulation(fmu_paths):
    fmi3 = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball3"]))
    fmi2 = fmpy.simulate_fmu(str(fmu_paths["bouncing_ball"]), fmi_type="CoSimulation")

    assert fmpy.read_model_description(str(fmu_paths["bouncing_ball3"])).fmiVersion == "3.0"
    assert len(fmi3) == len(fmi2) == 301
    for name in ("time", "h", "v"):
        np.testing.assert_allclose(fmi3[name], fmi2[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("fmi_type", "tolerance"), [("ModelExchange", 1e-3), ("CoSimulation", 1e-2)]
)
def test_inputs_params_follows_its_ode_for_a_step_input(fmu_paths, fmi_type, tolerance):
    step = np.array(
        [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (2.0, 1.0)], dtype=[("time", "<f8"), ("u", "<f8")]
    )
    result = fmpy.simulate_fmu(
        str(fmu_paths["inputs_params"]),
        fmi_type=fmi_type,
        start_values={"k": 2.0, "T": 0.5},
        input=step,
        output=["y", "u"],
    )

    times = result["time"]
    expected = np.where(times < 0.5, 0.0, 2.0 * (1 - np.exp(-(times - 0.5) / 0.5)))
    np.testing.assert_allclose(result["y"], expected, atol=tolerance)
    assert result["y"][-1] == pytest.approx(2.0 * (1 - math.exp(-3)), abs=tolerance)


def test_inputs_params_start_value_of_the_state_decays(fmu_paths):
    result = fmpy.simulate_fmu(
        str(fmu_paths["inputs_params"]), fmi_type="ModelExchange", start_values={"x": 1.0}
    )

    np.testing.assert_allclose(result["y"], np.exp(-result["time"]), atol=1e-3)


def test_read_secrets_reads_files_and_environment_when_unconfined(fmu_paths, monkeypatch):
    monkeypatch.setenv("FMUGW_TEST_SECRET", "visible-when-unconfined")
    helper = subprocess.Popen(["sleep", "30"], env={"FMUGW_TEST_SECRET": "helper-secret"})
    try:
        result, messages = simulate_capturing_log(
            fmu_paths["read_secrets"],
            start_values={"env_name": "FMUGW_TEST_SECRET", "probe_pid": helper.pid},
        )
    finally:
        helper.kill()
        helper.wait()
    log = "\n".join(messages)

    assert result is not None, log  # nothing was blocked, so the model reported fmi2OK
    assert "root:x:0" in log
    assert "helper-secret" in log
    assert "getenv(FMUGW_TEST_SECRET) = visible-when-unconfined" in log


def test_open_socket_connects_when_unconfined(fmu_paths):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result, messages = simulate_capturing_log(
            fmu_paths["open_socket"], start_values={"port": port}
        )
        listener.settimeout(1)
        connection, _ = listener.accept()
        connection.close()

    assert result is not None
    assert f"socket connected to 127.0.0.1:{port}" in "\n".join(messages)


def run_unconfined(fmu_path: Path, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """Simulate in a plain child interpreter (no sandbox), as the hostile models would
    run if the worker loaded them itself."""
    code = f"import fmpy; fmpy.simulate_fmu({str(fmu_path)!r})"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen_kwargs,
    )


def test_segfault_crashes_the_process(fmu_paths):
    completed = run_unconfined(fmu_paths["segfault"], timeout=30)

    assert completed.returncode == -11  # SIGSEGV
    assert "segfault: writing through a null pointer" in completed.stdout


def test_exit_early_ends_the_process(fmu_paths):
    completed = run_unconfined(fmu_paths["exit_early"], timeout=30)

    assert completed.returncode == 3


def test_endless_loop_never_returns(fmu_paths):
    with pytest.raises(subprocess.TimeoutExpired):
        run_unconfined(fmu_paths["endless_loop"], timeout=3)


def test_memory_hog_allocates_until_a_limit_stops_it(fmu_paths):
    limit = 768 << 20

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    completed = run_unconfined(fmu_paths["memory_hog"], timeout=60, preexec_fn=limit_address_space)

    assert completed.returncode != 0
    assert "memory_hog: malloc failed after" in completed.stdout


def test_hostile_models_build_as_separate_co_simulation_fmus(fmu_paths):
    for name in (
        "segfault",
        "exit_early",
        "endless_loop",
        "memory_hog",
        "fork_bomb",
        "open_socket",
    ):
        description = fmpy.read_model_description(str(fmu_paths[name]))
        assert description.coSimulation.modelIdentifier == name
        assert os.path.getsize(fmu_paths[name]) > 0


def test_tamper_fmu_changes_its_extracted_files_when_unconfined(fmu_paths, tmp_path):
    unzip_dir = fmpy.extract(str(fmu_paths["tamper_fmu"]), unzipdir=str(tmp_path / "fmu"))
    library = next(Path(unzip_dir, "binaries").rglob("*.so"))
    size_before = library.stat().st_size

    result, messages = simulate_capturing_log(Path(unzip_dir))
    log = "\n".join(messages)

    assert result is None, log  # a write went through, so the model reported fmi2Error
    assert "tamper: modified" in log
    assert library.stat().st_size == size_before + len("tampered")
    assert (library.parent / "tampered.txt").read_text() == "tampered"


def test_memory_scan_finds_its_own_description_in_memory(fmu_paths):
    own_description = TEST_MODELS["memory_scan"].description

    result, messages = simulate_capturing_log(
        fmu_paths["memory_scan"], start_values={"shifted_needle": shifted(own_description)}
    )

    assert result is not None, messages
    assert "memory_scan: found" in messages


def test_memory_scan_does_not_find_a_text_that_is_nowhere(fmu_paths):
    # Made shifted, so that the text itself never exists in this process.
    shifted_random_text = "".join(random.choice("bcdefghijklmnopqrstuvwxyz{") for _ in range(24))

    result, messages = simulate_capturing_log(
        fmu_paths["memory_scan"], start_values={"shifted_needle": shifted_random_text}
    )

    assert result is not None, messages
    assert "memory_scan: not found" in messages
