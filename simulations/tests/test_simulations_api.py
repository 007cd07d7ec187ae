import csv
import io
from datetime import timedelta

import fmpy
import numpy as np
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from simulations import services
from simulations.models import Simulation, SimulationStatus
from testing.api import api_client_for, start_run, uploaded_model_id

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"


def run_to_completion(client: APIClient, body: dict) -> dict:
    """POST a run, execute it as the worker would, and return its final JSON."""
    response = start_run(client, body)
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    services.simulation_execute(simulation_id=run_id)
    return client.get(f"{SIMULATIONS_URL}/{run_id}").json()


def result_as_array(client: APIClient, run: dict) -> tuple[list[str], np.ndarray]:
    response = client.get(run["result_url"] + "?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    # The view's StreamingHttpResponse; django-stubs type a test client's as HttpResponse.
    text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], np.array(rows[1:], dtype=float)


def assert_same_as_fmpy(header, table, reference) -> None:
    assert header == list(reference.dtype.names)
    assert table.shape == (len(reference), len(header))
    for index, name in enumerate(header):
        np.testing.assert_allclose(table[:, index], reference[name], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("fmu_name", "fmi_type"),
    [
        ("bouncing_ball", "CoSimulation"),
        ("bouncing_ball", "ModelExchange"),
        ("bouncing_ball3", "CoSimulation"),
        ("bouncing_ball1", "CoSimulation"),
    ],
)
def test_results_equal_fmpy_called_directly(api_client, fmu_paths, fmu_name, fmi_type):
    model_id = uploaded_model_id(api_client, fmu_paths[fmu_name])
    body = {
        "model": model_id,
        "fmi_type": fmi_type,
        "stop_time": 2.5,
        "output_interval": 0.01,
        "start_values": {"e": 0.8},
    }
    run = run_to_completion(api_client, body)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == 1.0
    header, table = result_as_array(api_client, run)
    reference = fmpy.simulate_fmu(
        str(fmu_paths[fmu_name]),
        fmi_type=fmi_type,
        start_time=0.0,
        stop_time=2.5,
        output_interval=0.01,
        start_values={"e": 0.8},
    )
    assert_same_as_fmpy(header, table, reference)


def test_inputs_and_parameters_equal_fmpy(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["inputs_params"])
    input_table = {"time": [0.0, 1.0, 2.0, 3.0], "u": [0.0, 1.0, 1.0, -2.0]}
    body = {
        "model": model_id,
        "fmi_type": "ModelExchange",
        "stop_time": 3.0,
        "output_interval": 0.05,
        "start_values": {"k": 2.0, "T": 0.5},
        "input": input_table,
        "output": ["y"],
    }
    run = run_to_completion(api_client, body)
    assert run["status"] == "succeeded", run["error"]
    header, table = result_as_array(api_client, run)
    signals = np.array(
        list(zip(input_table["time"], input_table["u"], strict=True)),
        dtype=[("time", np.float64), ("u", np.float64)],
    )
    reference = fmpy.simulate_fmu(
        str(fmu_paths["inputs_params"]),
        fmi_type="ModelExchange",
        start_time=0.0,
        stop_time=3.0,
        output_interval=0.05,
        start_values={"k": 2.0, "T": 0.5},
        input=signals,
        output=["y"],
    )
    assert_same_as_fmpy(header, table, reference)
    assert abs(table[-1, 1]) > 0.1  # the input moved the output


def test_json_result_has_columns_units_and_data(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run = run_to_completion(api_client, {"model": model_id, "stop_time": 1.0})
    response = api_client.get(run["result_url"] + "?format=json&variables=h")
    body = b"".join(response.streaming_content)
    import json

    result = json.loads(body)
    assert result["columns"] == ["time", "h"]
    assert result["units"]["time"] == "s"
    assert result["data"][0] == [0.0, 1.0]
    assert len(result["data"]) == run["result_rows"]


def test_unknown_result_variables_are_400(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run = run_to_completion(api_client, {"model": model_id, "stop_time": 0.5})
    response = api_client.get(run["result_url"] + "?variables=nope")
    assert response.status_code == 400
    assert "nope" in response.json()["detail"]


def test_defaults_come_from_the_default_experiment(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    response = start_run(api_client, {"model": model_id})
    assert response.status_code == 202
    params = response.json()["params"]
    assert params["start_time"] == 0.0
    assert params["stop_time"] == 3.0
    assert params["fmi_type"] == "CoSimulation"
    assert response.json()["status"] == "queued"
    assert response.json()["charge"] == {"kind": "free"}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"start_values": {"nope": 1}}, "start_values", "no variable 'nope'"),
        ({"start_values": {"der(h)": 1}}, "start_values", "cannot be given a start value"),
        ({"start_time": 2, "stop_time": 1}, "stop_time", "must be after"),
        ({"output_interval": 1e-9}, "output_interval", "limit"),
        ({"output": ["h", "missing"]}, "output", "no variable 'missing'"),
        ({"fmi_type": "Banana"}, "fmi_type", ""),
        ({"timeout": 100000}, "timeout", "longest"),
        ({"input": {"time": [0, 1], "g": [1, 2]}}, "input", "not an input"),
    ],
)
def test_bad_requests_are_400_naming_the_field(api_client, fmu_paths, body, field, words):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    response = start_run(api_client, {"model": model_id, **body})
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert not Simulation.objects.exists()


def test_another_accounts_model_cannot_be_run(fmu_paths):
    owner, stranger = api_client_for(UserFactory()), api_client_for(UserFactory())
    model_id = uploaded_model_id(owner, fmu_paths["bouncing_ball"])
    response = start_run(stranger, {"model": model_id})
    assert response.status_code == 400
    assert "model" in response.json()["errors"]


def test_another_accounts_run_and_result_are_404(fmu_paths):
    owner, stranger = api_client_for(UserFactory()), api_client_for(UserFactory())
    model_id = uploaded_model_id(owner, fmu_paths["bouncing_ball"])
    run = run_to_completion(owner, {"model": model_id, "stop_time": 0.5})
    for response in (
        stranger.get(f"{SIMULATIONS_URL}/{run['id']}"),
        stranger.get(f"{SIMULATIONS_URL}/{run['id']}/result"),
        stranger.post(f"{SIMULATIONS_URL}/{run['id']}/cancel"),
    ):
        assert response.status_code == 404
    assert stranger.get(SIMULATIONS_URL).json()["results"] == []


def test_same_idempotency_key_same_body_returns_the_same_run(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "stop_time": 1.0}
    first = start_run(api_client, body, HTTP_IDEMPOTENCY_KEY="abc-1").json()
    again = start_run(api_client, body, HTTP_IDEMPOTENCY_KEY="abc-1").json()
    assert first["id"] == again["id"]
    assert Simulation.objects.count() == 1


def test_same_idempotency_key_other_body_is_409(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    start_run(api_client, {"model": model_id, "stop_time": 1.0}, HTTP_IDEMPOTENCY_KEY="k")
    response = start_run(
        api_client, {"model": model_id, "stop_time": 2.0}, HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 409
    assert Simulation.objects.count() == 1


def test_a_failed_insert_without_idempotency_key_is_not_answered_with_an_earlier_run(
    api_client, fmu_paths, monkeypatch
):
    """Without a key, an IntegrityError (e.g. the model deleted meanwhile) is the caller's
    error, not a replay: it once returned the owner's latest keyless run of the same body."""
    from django.db import IntegrityError

    from simulations.models import Model
    from simulations.services import runs

    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    body = {"model": model_id, "stop_time": 1.0}
    earlier = start_run(api_client, body).json()

    def model_gone(model):
        raise IntegrityError("insert violates foreign key constraint")

    monkeypatch.setattr(runs, "_model_mark_used", model_gone)
    with pytest.raises(IntegrityError):
        runs.simulation_create(
            owner=api_client.user, model=Model.objects.get(pk=model_id), request={"stop_time": 1.0}
        )
    assert list(Simulation.objects.values_list("id", flat=True)) == [
        Simulation.objects.get(pk=earlier["id"]).pk
    ]


def test_enqueueing_names_the_registered_run_task():
    """Services enqueue by name, never by import; the name must be the task's."""
    from simulations.services.runs import RUN_SIMULATION_TASK
    from simulations.tasks import run_simulation_task

    assert run_simulation_task.name == RUN_SIMULATION_TASK


def test_cancelling_a_queued_run(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run_id = start_run(api_client, {"model": model_id}).json()["id"]
    response = api_client.post(f"{SIMULATIONS_URL}/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    services.simulation_execute(simulation_id=run_id)  # the queued task arrives later: no-op
    assert Simulation.objects.get(pk=run_id).status == SimulationStatus.CANCELLED
    assert api_client.post(f"{SIMULATIONS_URL}/{run_id}/cancel").status_code == 409


def test_wait_returns_at_once_for_a_finished_run(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run = run_to_completion(api_client, {"model": model_id, "stop_time": 0.5})
    response = api_client.get(f"{SIMULATIONS_URL}/{run['id']}?wait=30")
    assert response.json()["status"] == "succeeded"


def test_a_run_whose_worker_died_is_failed_after_its_lease(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run_id = start_run(api_client, {"model": model_id}).json()["id"]
    Simulation.objects.filter(pk=run_id).update(
        status=SimulationStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert services.reconcile_stale_simulations() == 1
    run = api_client.get(f"{SIMULATIONS_URL}/{run_id}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "worker_lost"
    assert services.reconcile_stale_simulations() == 0


def test_a_running_run_within_its_lease_is_left_alone(api_client, fmu_paths):
    model_id = uploaded_model_id(api_client, fmu_paths["bouncing_ball"])
    run_id = start_run(api_client, {"model": model_id}).json()["id"]
    Simulation.objects.filter(pk=run_id).update(
        status=SimulationStatus.RUNNING, lease_expires_at=timezone.now() + timedelta(seconds=30)
    )
    assert services.reconcile_stale_simulations() == 0
