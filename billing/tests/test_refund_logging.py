"""Every refund is logged with its cause: an operator traces money given back by run id."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import LedgerEntry, LedgerKind
from billing.selectors import credit_balance
from billing.tests.factories import LedgerEntryFactory
from simulations import services as simulation_services
from simulations.models import Simulation, SimulationStatus

pytestmark = [pytest.mark.stripe, pytest.mark.django_db]


def test_a_platform_fault_refund_is_logged_with_run_error_code_and_message(
    api_client, bouncing_ball, billing_on, caplog
):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    body = {"model": str(bouncing_ball.pk), "stop_time": 1.0}
    run_id = api_client.post("/api/v1/simulations", body, format="json").json()["id"]
    assert credit_balance(user=api_client.user) == 0
    # Its worker took it, then died: the lease ran out with the run still "running".
    Simulation.objects.filter(pk=run_id).update(
        status=SimulationStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=5),
        lease_expires_at=timezone.now() - timedelta(minutes=1),
    )

    with caplog.at_level(logging.WARNING):
        assert simulation_services.reconcile_stale_simulations() == 1

    assert credit_balance(user=api_client.user) == 100
    refund = LedgerEntry.objects.get(kind=LedgerKind.REFUND)
    fault = [
        record
        for record in caplog.records
        if record.name == "simulations.services.execution" and run_id in record.getMessage()
    ]
    assert [record.levelno for record in fault] == [logging.WARNING]
    message = fault[0].getMessage()
    assert "worker_lost" in message
    assert "The worker running this simulation stopped" in message
    assert "refunded" in message
    ledger = [
        record
        for record in caplog.records
        if record.name == "billing.services.run_charges" and run_id in record.getMessage()
    ]
    assert [record.levelno for record in ledger] == [logging.WARNING]
    assert "worker_lost" in ledger[0].getMessage()
    assert str(refund.pk) in ledger[0].getMessage()


def test_a_cancel_before_start_refund_is_logged_with_its_reason(
    api_client, bouncing_ball, billing_on, caplog
):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    body = {"model": str(bouncing_ball.pk), "stop_time": 1.0}
    run_id = api_client.post("/api/v1/simulations", body, format="json").json()["id"]

    with caplog.at_level(logging.WARNING):
        api_client.post(f"/api/v1/simulations/{run_id}/cancel")

    (record,) = [r for r in caplog.records if r.name == "billing.services.run_charges"]
    assert record.levelno == logging.WARNING
    assert run_id in record.getMessage()
    assert "cancelled before start" in record.getMessage()
