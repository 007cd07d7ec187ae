from typing import cast

import pytest

from accounts.tests.factories import UserFactory
from simulations.models import Simulation, SimulationStatus
from simulations.tests.factories import SimulationFactory

pytestmark = pytest.mark.django_db


def make_run(owner, status=SimulationStatus.QUEUED, **fields) -> Simulation:
    run = SimulationFactory(owner=owner, model=None, status=status, **fields)
    return cast(Simulation, run)  # factory_boy's Factory() makes the model


def test_runs_are_filtered_by_status_and_searched_by_owner(operator_client):
    alice, bob = UserFactory(), UserFactory()
    failed = make_run(alice, SimulationStatus.FAILED, error_code="model_crashed")
    make_run(bob, SimulationStatus.SUCCEEDED)
    page = operator_client.get("/admin/simulations/simulation/", {"status__exact": "failed"})
    assert str(failed.pk) in page.content.decode()
    assert page.context["cl"].result_count == 1
    page = operator_client.get("/admin/simulations/simulation/", {"q": bob.email})
    assert page.context["cl"].result_count == 1


def test_a_runs_page_shows_its_log(operator_client):
    run = make_run(UserFactory(), SimulationStatus.FAILED, log_tail="segfault: null write")
    page = operator_client.get(f"/admin/simulations/simulation/{run.pk}/change/")
    assert "segfault: null write" in page.content.decode()


def test_operators_cancel_a_queued_run(operator_client):
    run = make_run(UserFactory())
    operator_client.post(
        "/admin/simulations/simulation/", {"action": "cancel_runs", "_selected_action": [run.pk]}
    )
    run.refresh_from_db()
    assert run.status == SimulationStatus.CANCELLED
