"""Refunds in Stripe (charge.refunded): what was bought and not used is taken back, once."""

import pytest
from django.test import Client

from billing import services
from billing.models import LedgerEntry, LedgerKind, Payment, PaymentStatus
from billing.selectors import credit_balance
from billing.tests.factories import CreditPackFactory
from billing.tests.fake_stripe import pay_on_checkout

pytestmark = [pytest.mark.stripe, pytest.mark.django_db]

SIMULATIONS_URL = "/api/v1/simulations"


def paid(fake, webhook, payment: Payment) -> Payment:
    assert pay_on_checkout(fake, webhook, payment.stripe_checkout_session_id, to=Client()) == 200
    payment.refresh_from_db()
    return payment


def refunded_in_stripe(fake, webhook, payment: Payment, *, amount=None, times=1) -> Payment:
    charge = fake.refund(payment.stripe_checkout_session_id, amount=amount)
    event = fake.charge_event("charge.refunded", charge["id"])
    for _ in range(times):
        assert webhook.deliver(event, to=Client()) == 200
    payment.refresh_from_db()
    return payment


def test_a_refund_voids_an_unused_token(api_client, bouncing_ball, billing_on, webhook):
    payment = paid(billing_on, webhook, services.run_payment_open_or_create(user=api_client.user))

    payment = refunded_in_stripe(billing_on, webhook, payment)

    assert payment.status == PaymentStatus.REFUNDED
    assert payment.token_state == "void"
    assert payment.refunded_cents == 100
    assert "refunded in Stripe" in payment.notes
    response = api_client.post(
        SIMULATIONS_URL,
        {"model": str(bouncing_ball.pk)},
        format="json",
        HTTP_PAYMENT_TOKEN=payment.token,
    )
    assert response.status_code == 402
    assert response.json()["payment_token_status"] == "void"


def test_a_refund_takes_back_the_unspent_credits_of_a_pack_once(user, billing_on, webhook):
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = paid(
        billing_on, webhook, services.credit_pack_checkout_start(user=user, credit_pack=pack)
    )
    for _ in range(3):  # three runs spent
        LedgerEntry.objects.create(user=user, kind=LedgerKind.CHARGE, amount_cents=-100)
    assert credit_balance(user=user) == 700

    payment = refunded_in_stripe(billing_on, webhook, payment, times=3)

    assert payment.status == PaymentStatus.REFUNDED
    revocation = LedgerEntry.objects.get(kind=LedgerKind.REVOCATION)
    assert (revocation.amount_cents, revocation.payment_id) == (-700, payment.pk)
    assert "Stripe refund of charge ch_" in revocation.reason
    assert credit_balance(user=user) == 0


def test_a_refund_never_takes_the_balance_below_zero(user, billing_on, webhook):
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = paid(
        billing_on, webhook, services.credit_pack_checkout_start(user=user, credit_pack=pack)
    )
    LedgerEntry.objects.create(user=user, kind=LedgerKind.CHARGE, amount_cents=-1000)

    payment = refunded_in_stripe(billing_on, webhook, payment)

    assert payment.status == PaymentStatus.REFUNDED
    assert not LedgerEntry.objects.filter(kind=LedgerKind.REVOCATION).exists()
    assert credit_balance(user=user) == 0


def test_a_refund_after_the_token_paid_for_a_run_is_recorded(
    api_client, bouncing_ball, billing_on, webhook
):
    payment = paid(billing_on, webhook, services.run_payment_open_or_create(user=api_client.user))
    started = api_client.post(
        SIMULATIONS_URL,
        {"model": str(bouncing_ball.pk)},
        format="json",
        HTTP_PAYMENT_TOKEN=payment.token,
    )
    assert started.status_code == 202

    payment = refunded_in_stripe(billing_on, webhook, payment)

    assert payment.status == PaymentStatus.REFUNDED
    assert payment.token_state == "used"
    assert credit_balance(user=api_client.user) == 0


def test_a_partial_refund_is_recorded_and_leaves_the_credits(user, billing_on, webhook):
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = paid(
        billing_on, webhook, services.credit_pack_checkout_start(user=user, credit_pack=pack)
    )

    payment = refunded_in_stripe(billing_on, webhook, payment, amount=300)

    assert payment.status == PaymentStatus.PAID
    assert payment.refunded_cents == 300
    assert "partial refund" in payment.notes
    assert credit_balance(user=user) == 1000


def test_a_refund_of_a_charge_that_is_not_ours_is_ignored(user, billing_on, webhook):
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = paid(
        billing_on, webhook, services.credit_pack_checkout_start(user=user, credit_pack=pack)
    )
    Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent_id="pi_someone_else")
    charge = billing_on.refund(payment.stripe_checkout_session_id)
    charge_metadata = billing_on.charges[charge["id"]]["metadata"]
    charge_metadata.clear()

    event = billing_on.charge_event("charge.refunded", charge["id"])
    assert webhook.deliver(event, to=Client()) == 200

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PAID
    assert credit_balance(user=user) == 1000
