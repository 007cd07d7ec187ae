"""Stripe webhooks: only verified events count, and each payment is fulfilled exactly once."""

import json
import time

import pytest
from django.core import mail
from django.test import Client
from djstripe.models import Event, Session, WebhookEventTrigger

from billing import services
from billing.models import LedgerEntry, LedgerKind, Payment, PaymentStatus
from billing.selectors import credit_balance
from billing.tests.factories import CreditPackFactory
from billing.tests.fake_stripe import stripe_signature

pytestmark = [pytest.mark.stripe, pytest.mark.django_db]


@pytest.fixture
def run_payment(user, billing_on) -> Payment:
    """The open pay-per-run Payment a 402 gave the account."""
    return services.run_payment_open_or_create(user=user)


@pytest.fixture
def pack_payment(user, billing_on) -> Payment:
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    # factory_boy's CreditPackFactory() makes a CreditPack; mypy takes it for the factory.
    return services.credit_pack_checkout_start(user=user, credit_pack=pack)  # type: ignore[arg-type]


def deliver(webhook, fake, event_type: str, payment: Payment, **kwargs) -> int:
    event = fake.session_event(event_type, payment.stripe_checkout_session_id)
    return webhook.deliver(event, to=Client(), **kwargs)


def test_a_completed_checkout_marks_the_payment_paid_and_mints_a_token(
    run_payment, webhook, billing_on
):
    billing_on.pay(run_payment.stripe_checkout_session_id)

    assert deliver(webhook, billing_on, "checkout.session.completed", run_payment) == 200

    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PAID
    assert run_payment.token_state == "unused"
    assert run_payment.stripe_payment_intent_id.startswith("pi_")
    assert run_payment.fulfilled_by_event.startswith("evt_")
    # dj-stripe recorded the event and synced the session it re-fetched from "Stripe".
    assert Event.objects.filter(type="checkout.session.completed").count() == 1
    assert Session.objects.get(id=run_payment.stripe_checkout_session_id).payment_status == "paid"


def test_a_bad_signature_is_refused_and_changes_nothing(run_payment, webhook, billing_on):
    billing_on.pay(run_payment.stripe_checkout_session_id)

    status = deliver(
        webhook, billing_on, "checkout.session.completed", run_payment, secret="whsec_wrong"
    )

    assert status == 400
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING
    assert run_payment.token is None
    assert not Event.objects.exists()
    assert WebhookEventTrigger.objects.get().valid is False


def test_a_tampered_body_is_refused(run_payment, webhook, billing_on):
    billing_on.pay(run_payment.stripe_checkout_session_id)
    event = billing_on.session_event(
        "checkout.session.completed", run_payment.stripe_checkout_session_id
    )
    signed_body = json.dumps(event)
    signature = stripe_signature(signed_body, webhook.secret, int(time.time()))
    event["data"]["object"]["amount_total"] = 1

    assert webhook.post(json.dumps(event), signature=signature, to=Client()) == 400
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING


def test_an_unsigned_webhook_is_refused(run_payment, webhook, billing_on):
    billing_on.pay(run_payment.stripe_checkout_session_id)
    event = billing_on.session_event(
        "checkout.session.completed", run_payment.stripe_checkout_session_id
    )

    assert webhook.post(json.dumps(event), signature=None, to=Client()) == 400
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING


def test_a_signed_event_older_than_the_tolerance_is_refused(run_payment, webhook, billing_on):
    billing_on.pay(run_payment.stripe_checkout_session_id)

    status = deliver(
        webhook,
        billing_on,
        "checkout.session.completed",
        run_payment,
        timestamp=int(time.time()) - 301,
    )

    assert status == 400
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING
    assert not Event.objects.exists()


def test_a_request_cannot_choose_the_secret_it_is_verified_with(
    run_payment, webhook, billing_on, settings
):
    # dj-stripe honours this header when DEBUG is on; billing strips it first.
    settings.DEBUG = True
    billing_on.pay(run_payment.stripe_checkout_session_id)
    event = billing_on.session_event(
        "checkout.session.completed", run_payment.stripe_checkout_session_id
    )
    payload = json.dumps(event)
    forged = stripe_signature(payload, "whsec_attacker", int(time.time()))

    status = webhook.post(
        payload,
        signature=forged,
        to=Client(),
        headers={"X-Djstripe-Webhook-Secret": "whsec_attacker"},
    )

    assert status == 400
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING


def test_the_same_event_three_times_fulfils_once(
    pack_payment, webhook, billing_on, user, django_capture_on_commit_callbacks
):
    billing_on.pay(pack_payment.stripe_checkout_session_id)
    event = billing_on.session_event(
        "checkout.session.completed", pack_payment.stripe_checkout_session_id
    )

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [webhook.deliver(event, to=Client()) for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert credit_balance(user=user) == 1000
    assert LedgerEntry.objects.filter(kind=LedgerKind.PURCHASE).count() == 1
    assert Event.objects.count() == 1
    assert len(mail.outbox) == 1
    assert "$10.00 of credit" in mail.outbox[0].body


def test_different_events_about_one_payment_fulfil_it_once(
    run_payment, webhook, billing_on, django_capture_on_commit_callbacks
):
    billing_on.pay(run_payment.stripe_checkout_session_id)

    with django_capture_on_commit_callbacks(execute=True):
        for event_type in (
            "checkout.session.completed",
            "checkout.session.async_payment_succeeded",
            "checkout.session.completed",
        ):
            assert deliver(webhook, billing_on, event_type, run_payment) == 200
    token = Payment.objects.get(pk=run_payment.pk).token

    run_payment.refresh_from_db()
    assert run_payment.token == token
    assert Event.objects.count() == 3
    assert len(mail.outbox) == 1


def test_events_out_of_order_end_in_the_right_state(pack_payment, webhook, billing_on, user):
    """A delayed payment method: completed (unpaid), then async succeeded, delivered reversed."""
    session_id = pack_payment.stripe_checkout_session_id
    billing_on.start_async_payment(session_id)
    completed_unpaid = billing_on.session_event("checkout.session.completed", session_id)
    billing_on.settle_async_payment(session_id, succeeded=True)
    succeeded = billing_on.session_event("checkout.session.async_payment_succeeded", session_id)

    assert webhook.deliver(succeeded, to=Client()) == 200
    assert webhook.deliver(completed_unpaid, to=Client()) == 200

    pack_payment.refresh_from_db()
    assert pack_payment.status == PaymentStatus.PAID
    assert credit_balance(user=user) == 1000


def test_a_completed_but_unpaid_checkout_stays_pending_until_the_money_arrives(
    run_payment, webhook, billing_on
):
    session_id = run_payment.stripe_checkout_session_id
    billing_on.start_async_payment(session_id)

    assert deliver(webhook, billing_on, "checkout.session.completed", run_payment) == 200
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING
    assert run_payment.token is None

    billing_on.settle_async_payment(session_id, succeeded=True)
    assert (
        deliver(webhook, billing_on, "checkout.session.async_payment_succeeded", run_payment) == 200
    )
    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PAID
    assert run_payment.token_state == "unused"


def test_a_failed_delayed_payment_marks_the_payment_failed(run_payment, webhook, billing_on):
    session_id = run_payment.stripe_checkout_session_id
    billing_on.start_async_payment(session_id)
    billing_on.settle_async_payment(session_id, succeeded=False)

    assert deliver(webhook, billing_on, "checkout.session.async_payment_failed", run_payment) == 200

    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.FAILED
    assert run_payment.token is None


def test_an_expired_checkout_expires_the_payment(run_payment, webhook, billing_on):
    billing_on.expire(run_payment.stripe_checkout_session_id)

    assert deliver(webhook, billing_on, "checkout.session.expired", run_payment) == 200

    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.EXPIRED


def test_a_late_expired_event_does_not_undo_a_payment(run_payment, webhook, billing_on):
    session_id = run_payment.stripe_checkout_session_id
    stale_expired = billing_on.session_event("checkout.session.expired", session_id)
    stale_expired["data"]["object"]["status"] = "expired"
    billing_on.pay(session_id)

    assert deliver(webhook, billing_on, "checkout.session.completed", run_payment) == 200
    assert webhook.deliver(stale_expired, to=Client()) == 200

    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PAID


def test_a_checkout_paid_with_a_different_amount_is_not_fulfilled(run_payment, webhook, billing_on):
    billing_on.pay(run_payment.stripe_checkout_session_id, amount_total=1)

    assert deliver(webhook, billing_on, "checkout.session.completed", run_payment) == 200

    run_payment.refresh_from_db()
    assert run_payment.status == PaymentStatus.PENDING
    assert run_payment.token is None


def test_a_session_that_is_not_ours_is_acknowledged_and_ignored(webhook, billing_on, user):
    foreign = billing_on._session_create(
        {
            "mode": "payment",
            "success_url": "https://elsewhere.example/ok",
            "line_items": [
                {
                    "quantity": "1",
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": "500",
                        "product_data": {"name": "x"},
                    },
                }
            ],
        }
    )
    billing_on.pay(foreign["id"])

    status = webhook.deliver(
        billing_on.session_event("checkout.session.completed", foreign["id"]), to=Client()
    )

    assert status == 200
    assert not Payment.objects.exists()
    assert credit_balance(user=user) == 0


def test_the_receipt_is_sent_only_after_the_payment_is_committed(
    run_payment, webhook, billing_on, django_capture_on_commit_callbacks
):
    billing_on.pay(run_payment.stripe_checkout_session_id)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deliver(webhook, billing_on, "checkout.session.completed", run_payment)

    assert mail.outbox == []
    for callback in callbacks:
        callback()
    assert len(mail.outbox) == 1
    assert str(run_payment.pk) in mail.outbox[0].body
    assert run_payment.user.email in mail.outbox[0].to
