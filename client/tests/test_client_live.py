"""The Python client against a live gateway (gunicorn + Celery worker + PostgreSQL)."""

from __future__ import annotations

import csv
import io
import math
import uuid
import zipfile

import numpy as np
import pytest
from fmugateway_client import (
    AuthenticationError,
    Client,
    Conflict,
    Model,
    NotFound,
    Result,
    Simulation,
    SimulationFailed,
    ValidationError,
)


def parse_csv(text: str) -> tuple[list[str], list[list[float]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [[float(cell) for cell in row] for row in rows[1:]]


@pytest.mark.live
def test_upload_simulate_and_the_result_equals_the_servers_csv(gateway, fmu_paths, tmp_path):
    client = gateway.client
    account = client.account()
    assert account.email == gateway.user.email
    assert account.billing_mode == "off"

    model = client.upload_model(fmu_paths["bouncing_ball"])
    assert isinstance(model, Model)
    assert (model.model_name, model.fmi_version, model.variables_count) == (
        "bouncing_ball",
        "2.0",
        6,
    )
    assert model.default_experiment["stop_time"] == 3.0
    assert [listed.id for listed in client.models()] == [model.id]
    variables = {variable.name: variable for variable in client.variables(model)}
    assert variables["e"].causality == "parameter"
    assert variables["e"].start == "0.7"
    assert [v.name for v in client.variables(model.id, causality="output")] == ["h", "v"]

    seen: list[Simulation] = []
    result = client.simulate(
        model.id,
        stop_time=2.0,
        output_interval=0.01,
        start_values={"e": 0.8},
        output=["h", "v"],
        progress=seen.append,
    )

    assert isinstance(result, Result)
    assert result.simulation is not None and result.simulation.status == "succeeded"
    # The callback saw the run from its first state to the finished one.
    assert seen[0].status in ("queued", "running", "succeeded")
    assert seen[-1].status == "succeeded"
    assert all(0.0 <= state.progress <= 1.0 for state in seen)

    header, rows = parse_csv(gateway.server_csv(result.simulation.id))
    assert result.columns == header == ["time", "h", "v"]
    assert result.units.get("time") == "s"
    assert len(result) == len(rows) > 100
    # CSV carries 15 significant digits; the JSON the client reads carries all 17.
    for mine, theirs in zip(result.data, rows, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-13, abs=1e-15)
    assert result.records()[0] == {"time": 0.0, "h": 1.0, "v": 0.0}
    assert result.column("h") == result["h"] == [row[1] for row in result.data]
    table = result.to_numpy()
    assert table.dtype.names == ("time", "h", "v")
    np.testing.assert_allclose(table["h"], np.array(rows)[:, 1], rtol=1e-13)

    # result_csv streams the server's bytes to the file unchanged.
    written = client.result_csv(result.simulation.id, tmp_path / "out.csv")
    assert written == tmp_path / "out.csv"
    assert written.read_text() == gateway.server_csv(result.simulation.id)
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".part")]
    only_h = client.result_csv(result.simulation, tmp_path / "h.csv", variables=["h"])
    assert only_h.read_text().splitlines()[0] == "time,h"

    # A run without waiting, then waited for: same numbers as the one above.
    queued = client.start_simulation(
        model, stop_time=2.0, output_interval=0.01, start_values={"e": 0.8}
    )
    assert isinstance(queued, Simulation) and queued.status in ("queued", "running")
    finished = client.wait(queued.id, timeout=120)
    assert finished.succeeded
    again = client.result(finished, variables=["h", "v"])
    assert again.data == result.data


@pytest.mark.live
def test_inputs_go_to_the_model_as_columns(gateway, fmu_paths):
    client = gateway.client
    model = client.upload_model(fmu_paths["inputs_params"])
    input_signal = np.array(
        [(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, -2.0)], dtype=[("time", "f8"), ("u", "f8")]
    )
    from_array = client.simulate(
        model, stop_time=3.0, start_values={"k": 2}, input=input_signal, output=["y"]
    )
    from_mapping = client.simulate(
        model,
        stop_time=3.0,
        start_values={"k": 2},
        input={"time": [0.0, 1.0, 2.0, 3.0], "u": [0.0, 1.0, 1.0, -2.0]},
        output="y",
    )
    assert from_array.columns == ["time", "y"]
    assert from_array.data == from_mapping.data
    assert abs(from_array["y"][-1]) > 0.1  # the input moved the output


@pytest.mark.live
def test_problem_json_errors_become_typed_exceptions(web_only, fmu_paths, tmp_path):
    client = web_only.client

    with pytest.raises(AuthenticationError) as unauthenticated:
        Client(web_only.url, "fmu_wrong_key").account()
    assert unauthenticated.value.status == 401
    assert unauthenticated.value.type.endswith("/errors/unauthenticated")
    assert unauthenticated.value.title == "Authentication required"

    with pytest.raises(NotFound) as missing:
        client.model(str(uuid.uuid4()))
    assert missing.value.status == 404
    assert missing.value.title == "Not found"
    with pytest.raises(NotFound):
        client.simulation(str(uuid.uuid4()))

    model = client.upload_model(fmu_paths["bouncing_ball"])
    with pytest.raises(ValidationError) as invalid:
        client.simulate(model, start_time=2.0, stop_time=1.0, start_values={"nope": 1})
    error = invalid.value
    assert error.status == 400
    assert error.type.endswith("/errors/invalid-request")
    assert "stop_time" in error.errors or "start_values" in error.errors
    assert "see errors" in error.detail
    assert "400 Invalid request" in str(error)

    with pytest.raises(ValidationError) as unknown_model:
        client.simulate(str(uuid.uuid4()), stop_time=1.0)
    assert unknown_model.value.errors == {"model": ["No such model."]}

    not_an_fmu = tmp_path / "broken.fmu"
    with zipfile.ZipFile(not_an_fmu, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with pytest.raises(ValidationError) as rejected:
        client.upload_model(not_an_fmu)
    assert rejected.value.detail

    # The same Idempotency-Key with another body is refused, not run twice.
    queued = client.start_simulation(model, stop_time=1.0, idempotency_key="key-1")
    replayed = client.start_simulation(model, stop_time=1.0, idempotency_key="key-1")
    assert replayed.id == queued.id
    with pytest.raises(Conflict) as reused:
        client.start_simulation(model, stop_time=2.0, idempotency_key="key-1")
    assert reused.value.status == 409
    with pytest.raises(Conflict):
        client.result(queued)  # no result before it has run

    cancelled = client.cancel(queued)
    assert cancelled.status == "cancelled"
    assert client.simulation(queued.id).status == "cancelled"


@pytest.mark.live
def test_a_run_that_fails_raises_simulation_failed_with_the_log(gateway, fmu_paths):
    client = gateway.client
    model = client.upload_model(fmu_paths["segfault"])
    with pytest.raises(SimulationFailed) as failed:
        client.simulate(model, wait_timeout=120)
    simulation = failed.value.simulation
    assert simulation.status == "failed"
    assert simulation.error is not None
    assert simulation.error.code == "model_crashed"
    assert "SIGSEGV" in str(failed.value)


def test_a_non_finite_value_in_json_is_none_and_nan_in_numpy():
    result = Result(columns=["time", "x"], units={}, data=[[0.0, None], [1.0, 2.0]])
    assert result.records() == [{"time": 0.0, "x": None}, {"time": 1.0, "x": 2.0}]
    table = result.to_numpy()
    assert math.isnan(table["x"][0]) and table["x"][1] == 2.0
