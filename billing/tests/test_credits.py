"""Credits: packs bought through Checkout, runs debiting the ledger, refunds of our faults."""

import pytest
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from billing.charges import Charge
from billing.models import LedgerEntry, LedgerKind, Payment
from billing.selectors import credit_balance
from billing.services import run_charge_give_back
from billing.tests.factories import CreditPackFactory, LedgerEntryFactory, PaymentFactory
from fmuengine import runner
from simulations import services as simulation_services
from simulations.models import Simulation, SimulationStatus
from simulations.tests.factories import upload_model
from testing.api import run_request
from testing.faults import sandbox_cannot_start

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"


@pytest.mark.stripe
def test_a_credit_pack_bought_on_checkout_pays_for_runs_and_a_platform_fault_refunds_one(
    browser, api_client, bouncing_ball, billing_on, webhook, monkeypatch
):
    user = api_client.user
    pack = CreditPackFactory(name="Starter", credit_cents=1050, price_cents=900)
    pricing = browser.get(reverse("billing:pricing")).content.decode()
    assert "Starter" in pricing
    assert "$9.00" in pricing

    bought = browser.post(reverse("billing:pack-buy", args=[pack.pk]))

    assert bought.status_code == 302
    payment = Payment.objects.get(user=user)
    assert bought["Location"] == payment.checkout_url
    session = billing_on.session_view(payment.stripe_checkout_session_id)
    assert (session["amount_total"], session["currency"]) == (900, "usd")
    assert credit_balance(user=user) == 0  # nothing before Stripe says it is paid

    billing_on.pay(payment.stripe_checkout_session_id)
    event = billing_on.session_event("checkout.session.completed", session["id"])
    assert webhook.deliver(event, to=Client()) == 200

    purchase = LedgerEntry.objects.get(user=user)
    assert (purchase.kind, purchase.amount_cents, purchase.payment_id) == (
        LedgerKind.PURCHASE,
        1050,
        payment.pk,
    )
    assert credit_balance(user=user) == 1050

    started = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert started.status_code == 202
    run = started.json()
    assert run["charge"]["kind"] == "credit"
    charge = LedgerEntry.objects.get(kind=LedgerKind.CHARGE)
    assert (charge.amount_cents, str(charge.simulation_id)) == (-100, run["id"])
    assert credit_balance(user=user) == 950

    monkeypatch.setattr(runner, "run_simulation", sandbox_cannot_start)
    failed = simulation_services.simulation_execute(simulation_id=run["id"])

    assert failed.status == SimulationStatus.FAILED
    assert failed.charge["refunded"] is True
    refund = LedgerEntry.objects.get(kind=LedgerKind.REFUND)
    assert (refund.amount_cents, str(refund.simulation_id)) == (100, run["id"])
    assert credit_balance(user=user) == 1050


@pytest.mark.stripe
def test_a_model_failure_is_charged(api_client, billing_on, fmu_paths):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    segfault = upload_model(api_client.user, fmu_paths["segfault"])
    run = api_client.post(SIMULATIONS_URL, run_request(segfault), format="json").json()

    finished = simulation_services.simulation_execute(simulation_id=run["id"])

    assert finished.status == SimulationStatus.FAILED
    assert not finished.charge.get("refunded")
    assert credit_balance(user=api_client.user) == 0


@pytest.mark.stripe
@pytest.mark.parametrize("how", [2, 3, 4], ids=["nested-error-report", "lying-npy", "deep-tree"])
def test_output_a_model_forged_to_break_the_reader_is_charged_not_refunded(
    api_client, billing_on, fmu_paths, how
):
    """Before Sandbox v2, reading these raised in the runner (RecursionError,
    MemoryError) and the run became a refunded platform fault: free compute."""
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    forger = upload_model(api_client.user, fmu_paths["output_forger"])
    request = run_request(forger, start_values={"how": how})
    run = api_client.post(SIMULATIONS_URL, request, format="json").json()

    finished = simulation_services.simulation_execute(simulation_id=run["id"])

    assert finished.status == SimulationStatus.FAILED
    assert finished.error_code in ("model_error", "invalid_result")
    assert not finished.charge.get("refunded")
    assert credit_balance(user=api_client.user) == 0


@pytest.mark.stripe
def test_cancelling_a_queued_run_gives_its_credit_back(api_client, bouncing_ball, billing_on):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    run = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json").json()
    assert credit_balance(user=api_client.user) == 0

    cancelled = api_client.post(f"{SIMULATIONS_URL}/{run['id']}/cancel")

    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["charge"]["refunded"] is True
    assert credit_balance(user=api_client.user) == 100


@pytest.mark.stripe
def test_a_token_run_that_fails_through_our_fault_becomes_a_credit(
    api_client, bouncing_ball, billing_on, monkeypatch
):
    payment = PaymentFactory(user=api_client.user, paid=True)
    run = api_client.post(
        SIMULATIONS_URL, run_request(bouncing_ball), format="json", HTTP_PAYMENT_TOKEN=payment.token
    ).json()

    monkeypatch.setattr(runner, "run_simulation", sandbox_cannot_start)
    simulation_services.simulation_execute(simulation_id=run["id"])

    refund = LedgerEntry.objects.get(user=api_client.user)
    assert (refund.kind, refund.amount_cents) == (LedgerKind.REFUND, 100)
    assert refund.payment_id == payment.pk
    assert str(refund.simulation_id) == run["id"]
    assert credit_balance(user=api_client.user) == 100


@pytest.mark.stripe
def test_a_charge_is_refunded_at_most_once(api_client, bouncing_ball, billing_on):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    run = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json").json()
    simulation = Simulation.objects.get(pk=run["id"])

    once = run_charge_give_back(charge=Charge.from_json(simulation.charge), reason="first")
    twice = run_charge_give_back(charge=once, reason="again")

    assert twice == once
    with pytest.raises(IntegrityError):
        LedgerEntry.objects.create(
            user=api_client.user, kind=LedgerKind.REFUND, amount_cents=100, simulation=simulation
        )


@pytest.mark.stripe
def test_a_run_takes_its_price_from_credit_and_less_than_its_price_does_not_pay(
    api_client, bouncing_ball, billing_on, settings
):
    settings.SIMULATION_PRICE_CENTS = 150
    LedgerEntryFactory(user=api_client.user, amount_cents=250)

    paid = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")
    short = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert paid.status_code == 202
    assert LedgerEntry.objects.get(kind=LedgerKind.CHARGE).amount_cents == -150
    assert short.status_code == 402
    assert short.json()["detail"].startswith("You have $1.00 of credit: this run costs $1.50.")
    assert credit_balance(user=api_client.user) == 100


def test_the_ledger_refuses_entries_whose_sign_contradicts_their_kind(user):
    with pytest.raises(IntegrityError):
        LedgerEntry.objects.create(user=user, kind=LedgerKind.CHARGE, amount_cents=100)


# --- Idempotency-Key with billing ---------------------------------------------------------------


@pytest.mark.stripe
def test_the_same_idempotency_key_and_body_start_one_run_and_charge_once(
    api_client, bouncing_ball, billing_on
):
    LedgerEntryFactory(user=api_client.user, amount_cents=500)
    body = run_request(bouncing_ball)

    first = api_client.post(SIMULATIONS_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api_client.post(SIMULATIONS_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert Simulation.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=LedgerKind.CHARGE).count() == 1
    assert credit_balance(user=api_client.user) == 400


@pytest.mark.stripe
def test_the_same_idempotency_key_with_another_body_is_a_conflict_and_charges_nothing(
    api_client, bouncing_ball, billing_on
):
    LedgerEntryFactory(user=api_client.user, amount_cents=500)
    api_client.post(
        SIMULATIONS_URL, run_request(bouncing_ball), format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    conflict = api_client.post(
        SIMULATIONS_URL,
        run_request(bouncing_ball, stop_time=2.0),
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-2",
    )

    assert conflict.status_code == 409
    assert credit_balance(user=api_client.user) == 400


@pytest.mark.stripe
def test_a_retry_with_the_same_key_and_the_spent_token_returns_the_run(
    api_client, bouncing_ball, billing_on
):
    payment = PaymentFactory(user=api_client.user, paid=True)
    body = run_request(bouncing_ball)
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-3", "HTTP_PAYMENT_TOKEN": payment.token}

    first = api_client.post(SIMULATIONS_URL, body, format="json", **headers)
    retried = api_client.post(SIMULATIONS_URL, body, format="json", **headers)

    assert first.status_code == retried.status_code == 202
    assert first.json()["id"] == retried.json()["id"]
    assert Simulation.objects.count() == 1
