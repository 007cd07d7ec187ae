"""Management commands: setup_stripe_webhook and reconcile_payments."""

import io
import json
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from djstripe.models import WebhookEndpoint

from accounts.tests.factories import UserFactory
from billing import services
from billing.models import Payment, PaymentStatus
from billing.selectors import credit_balance
from billing.tests.factories import CreditPackFactory
from billing.tests.fake_stripe import WebhookSender, stripe_signature

pytestmark = pytest.mark.django_db


def command(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- setup_stripe_webhook ---------------------------------------------------------------------


def test_a_local_endpoint_is_recorded_with_the_secret_and_its_url_printed_last():
    printed = command("setup_stripe_webhook", "--secret", "whsec_local_demo", "--local")

    url = printed.strip().splitlines()[-1]
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret == "whsec_local_demo"
    assert url == endpoint.url
    assert url.startswith("http://localhost:8000/stripe/webhook/")
    assert urlsplit(url).path == f"/stripe/webhook/{endpoint.djstripe_uuid}/"


def test_recording_the_same_local_secret_again_keeps_one_endpoint():
    first = command("setup_stripe_webhook", "--secret", "whsec_again", "--local")
    second = command("setup_stripe_webhook", "--secret", "whsec_again", "--local")

    assert first.strip().splitlines()[-1] == second.strip().splitlines()[-1]
    assert WebhookEndpoint.objects.count() == 1


def test_a_local_endpoint_needs_a_signing_secret():
    with pytest.raises(CommandError, match="whsec_"):
        command("setup_stripe_webhook", "--local")


@pytest.mark.stripe
def test_without_local_the_endpoint_is_created_in_stripe(billing_on, run_payment_factory):
    printed = command("setup_stripe_webhook", "--base-url", "https://gw.example.com")

    url = printed.strip().splitlines()[-1]
    (created,) = billing_on.webhook_endpoints.values()
    assert created["url"] == url
    assert url.startswith("https://gw.example.com/stripe/webhook/")
    assert "checkout.session.completed" in created["enabled_events"]
    assert "charge.refunded" in created["enabled_events"]
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    assert endpoint.secret == created["secret"]

    # Events signed with the secret Stripe made are accepted there.
    payment = run_payment_factory()
    billing_on.pay(payment.stripe_checkout_session_id)
    sender = WebhookSender(path=urlsplit(url).path, secret=created["secret"])
    event = billing_on.session_event(
        "checkout.session.completed", payment.stripe_checkout_session_id
    )
    assert sender.deliver(event, to=Client()) == 200
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PAID


def test_creating_the_endpoint_in_stripe_needs_billing_on():
    with pytest.raises(CommandError, match="STRIPE_SECRET_KEY"):
        command("setup_stripe_webhook")


@pytest.fixture
def run_payment_factory(billing_on):
    def make():
        return services.run_payment_open_or_create(user=UserFactory())

    return make


# --- reconcile_payments -----------------------------------------------------------------------


@pytest.mark.stripe
def test_reconcile_fulfils_a_missed_payment_and_expires_an_expired_one(
    billing_on, run_payment_factory
):
    missed = run_payment_factory()
    abandoned = run_payment_factory()
    still_open = run_payment_factory()
    billing_on.pay(missed.stripe_checkout_session_id)  # its webhook never arrived
    billing_on.expire(abandoned.stripe_checkout_session_id)

    printed = command("reconcile_payments")

    assert "paid: 1, expired: 1" in printed
    missed.refresh_from_db()
    abandoned.refresh_from_db()
    still_open.refresh_from_db()
    assert missed.status == PaymentStatus.PAID
    assert missed.token_state == "unused"
    assert missed.fulfilled_by_event == "reconcile_payments"
    assert abandoned.status == PaymentStatus.EXPIRED
    assert still_open.status == PaymentStatus.PENDING

    assert "paid: 0, expired: 0" in command("reconcile_payments")
    missed_again = Payment.objects.get(pk=missed.pk)
    assert missed_again.token == missed.token


@pytest.mark.stripe
def test_reconcile_fulfils_a_missed_credit_pack_once(billing_on):
    user = UserFactory()
    pack = CreditPackFactory(credit_cents=1000, price_cents=900)
    payment = services.credit_pack_checkout_start(user=user, credit_pack=pack)
    billing_on.pay(payment.stripe_checkout_session_id)

    command("reconcile_payments")
    command("reconcile_payments")

    assert credit_balance(user=user) == 1000


@pytest.mark.stripe
def test_reconcile_checks_overdue_payments_older_than_its_window(billing_on, run_payment_factory):
    old = run_payment_factory()
    billing_on.expire(old.stripe_checkout_session_id)
    Payment.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=10),
        expires_at=timezone.now() - timedelta(days=9),
    )

    command("reconcile_payments", "--days", "1")

    old.refresh_from_db()
    assert old.status == PaymentStatus.EXPIRED


def test_reconcile_needs_billing_on():
    with pytest.raises(CommandError, match="Billing is off"):
        command("reconcile_payments")


@pytest.mark.stripe
def test_a_webhook_after_reconciliation_changes_nothing(billing_on, run_payment_factory, webhook):
    payment = run_payment_factory()
    billing_on.pay(payment.stripe_checkout_session_id)
    command("reconcile_payments")
    token = Payment.objects.get(pk=payment.pk).token

    event = billing_on.session_event(
        "checkout.session.completed", payment.stripe_checkout_session_id
    )
    payload = json.dumps(event)
    status = webhook.post(
        payload, signature=stripe_signature(payload, webhook.secret, int(time.time())), to=Client()
    )

    assert status == 200
    assert Payment.objects.get(pk=payment.pk).token == token


@pytest.mark.stripe
def test_the_periodic_task_reconciles_and_does_nothing_with_billing_off(
    billing_on, run_payment_factory, settings
):
    from billing.tasks import reconcile_payments

    missed = run_payment_factory()
    billing_on.pay(missed.stripe_checkout_session_id)

    assert reconcile_payments() == {"paid": 1}
    settings.BILLING_ENABLED = False
    assert reconcile_payments() == {}
