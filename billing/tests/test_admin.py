"""Operators in the admin: find payments, grant credits, refund runs, void tokens."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from billing.models import LedgerEntry, LedgerKind, Payment
from billing.selectors import credit_balance
from billing.tests.factories import CreditPackFactory, LedgerEntryFactory, PaymentFactory
from simulations.models import Simulation, SimulationStatus

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"


def changelist(model: str) -> str:
    return reverse(f"admin:billing_{model}_changelist")


def test_the_billing_pages_of_the_admin_open(operator_client):
    PaymentFactory(paid=True)
    LedgerEntryFactory()
    CreditPackFactory()

    for model in ("payment", "ledgerentry", "creditpack"):
        assert operator_client.get(changelist(model)).status_code == 200
    assert "Payments (billing off)" in operator_client.get(changelist("payment")).content.decode()


@pytest.mark.stripe
def test_the_admin_says_which_stripe_mode_is_on(operator_client, billing_on):
    assert (
        "Payments (Stripe test mode)" in operator_client.get(changelist("payment")).content.decode()
    )
    assert operator_client.get(reverse("admin:billing_ledgerentry_add")).status_code == 200


def test_payments_are_found_by_email_session_id_and_payment_id(operator_client):
    wanted = PaymentFactory(user=UserFactory(email="wanted@example.com"))
    other = PaymentFactory()

    for term in ("wanted@example.com", wanted.stripe_checkout_session_id, str(wanted.pk)):
        page = operator_client.get(changelist("payment"), {"q": term}).content.decode()
        assert str(wanted.pk) in page, term
        assert str(other.pk) not in page, term


def test_an_operator_grants_credits_with_a_reason(operator_client):
    customer = UserFactory()

    response = operator_client.post(
        reverse("admin:billing_ledgerentry_add"),
        {"user": customer.pk, "amount": "5.25", "reason": "sorry for the outage"},
    )

    assert response.status_code == 302
    entry = LedgerEntry.objects.get(user=customer)
    assert (entry.kind, entry.amount_cents, entry.reason) == (
        LedgerKind.GRANT,
        525,
        "sorry for the outage",
    )
    assert entry.created_by.is_staff
    assert credit_balance(user=customer) == 525


def test_the_admin_shows_money(operator_client):
    LedgerEntryFactory(amount_cents=1234, reason="goodwill")
    CreditPackFactory(name="Big", credit_cents=5500, price_cents=5000)
    PaymentFactory(amount_cents=4242)

    ledger = operator_client.get(changelist("ledgerentry")).content.decode()
    packs = operator_client.get(changelist("creditpack")).content.decode()
    payments = operator_client.get(changelist("payment")).content.decode()

    assert "+$12.34" in ledger
    assert "$55.00" in packs and "$50.00" in packs
    assert "$42.42" in payments


def test_a_grant_without_a_reason_is_refused(operator_client):
    customer = UserFactory()

    response = operator_client.post(
        reverse("admin:billing_ledgerentry_add"),
        {"user": customer.pk, "amount": "5.00", "reason": ""},
    )

    assert response.status_code == 200  # the form again, with its error
    assert not LedgerEntry.objects.exists()


def test_an_operator_cannot_revoke_more_than_the_balance(operator_client):
    customer = UserFactory()
    LedgerEntryFactory(user=customer, amount_cents=200)

    refused = operator_client.post(
        reverse("admin:billing_ledgerentry_add"),
        {"user": customer.pk, "amount": "-2.01", "reason": "too many"},
    )
    allowed = operator_client.post(
        reverse("admin:billing_ledgerentry_add"),
        {"user": customer.pk, "amount": "-2.00", "reason": "granted by mistake"},
    )

    assert refused.status_code == 200
    assert allowed.status_code == 302
    assert credit_balance(user=customer) == 0


@pytest.mark.stripe
def test_an_operator_refunds_a_finished_run(operator_client, api_client, bouncing_ball, billing_on):
    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    run = api_client.post(SIMULATIONS_URL, {"model": str(bouncing_ball.pk)}, format="json").json()
    Simulation.objects.filter(pk=run["id"]).update(status=SimulationStatus.FAILED)
    charge = LedgerEntry.objects.get(kind=LedgerKind.CHARGE)

    operator_client.post(
        changelist("ledgerentry"),
        {"action": "refund_runs", "_selected_action": [charge.pk]},
    )
    operator_client.post(  # a second time changes nothing
        changelist("ledgerentry"),
        {"action": "refund_runs", "_selected_action": [charge.pk]},
    )

    assert credit_balance(user=api_client.user) == 100
    refund = LedgerEntry.objects.get(kind=LedgerKind.REFUND)
    assert refund.created_by is not None
    assert Simulation.objects.get(pk=run["id"]).charge["refunded"] is True


def test_an_operator_voids_an_unused_token(operator_client):
    payment = PaymentFactory(paid=True)

    operator_client.post(
        changelist("payment"), {"action": "void_tokens", "_selected_action": [payment.pk]}
    )

    payment.refresh_from_db()
    assert payment.token_state == "void"
    assert "token voided" in payment.notes


@pytest.mark.stripe
def test_an_operator_refunds_the_money_in_stripe_and_the_webhook_does_the_rest(
    operator_client, user, billing_on, webhook
):
    from billing import services

    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = services.credit_pack_checkout_start(user=user, credit_pack=pack)
    billing_on.pay(payment.stripe_checkout_session_id)
    completed = billing_on.session_event(
        "checkout.session.completed", payment.stripe_checkout_session_id
    )
    webhook.deliver(completed, to=Client())

    operator_client.post(
        changelist("payment"), {"action": "refund_in_stripe", "_selected_action": [payment.pk]}
    )

    (refund,) = billing_on.refunds.values()
    payment.refresh_from_db()
    assert refund["payment_intent"] == payment.stripe_payment_intent_id
    assert payment.status == "paid"  # nothing changes before Stripe confirms
    webhook.deliver(billing_on.charge_event("charge.refunded", refund["charge"]), to=Client())
    assert Payment.objects.get(pk=payment.pk).status == "refunded"
    assert credit_balance(user=user) == 0
