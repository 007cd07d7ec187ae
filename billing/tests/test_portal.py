"""Portal pages: pricing with real numbers, billing history, the page Checkout returns to."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from billing.tests.factories import CreditPackFactory, LedgerEntryFactory, PaymentFactory

pytestmark = pytest.mark.django_db


@pytest.mark.stripe
def test_the_pricing_page_shows_the_real_price_packs_and_limits(client, settings, billing_on):
    settings.SIMULATION_PRICE_CENTS = 125
    settings.SIMULATION_CPU_SECONDS = 42
    CreditPackFactory(name="Team pack", credit_cents=20000, price_cents=15000)
    CreditPackFactory(name="Retired pack", credit_cents=500, price_cents=100, active=False)

    page = client.get(reverse("billing:pricing")).content.decode()

    assert "$1.25" in page
    assert "Team pack" in page
    assert "$150.00" in page
    assert "$200.00" in page  # the credit it sells
    assert "<td>160</td>" in page  # runs it pays for at $1.25
    assert "Retired pack" not in page
    assert "CPU time: 42 s" in page
    assert "30 minutes" in page


def test_the_pricing_page_says_runs_are_free_when_billing_is_off(client):
    page = client.get(reverse("billing:pricing")).content.decode()

    assert "every run is free" in page
    assert "billing:pack-buy" not in page and "/buy/" not in page


@pytest.mark.stripe
def test_the_header_shows_the_balance(browser, user, billing_on):
    LedgerEntryFactory(user=user, amount_cents=1234)

    page = browser.get(reverse("billing:pricing")).content.decode()

    assert "Billing · $12.34" in page


@pytest.mark.stripe
def test_billing_history_lists_payments_credits_and_runs(browser, user, billing_on):
    PaymentFactory(user=user, paid=True)
    LedgerEntryFactory(user=user, amount_cents=400, reason="welcome gift")
    PaymentFactory(user=UserFactory(), paid=True, amount_cents=4242)

    page = browser.get(reverse("billing:history")).content.decode()

    assert '<strong id="balance">$4.00</strong>' in page
    assert "<td>$1.00</td>" in page  # the payment
    assert "welcome gift" in page
    assert "+$4.00" in page
    assert "42.42" not in page  # another account's payment


@pytest.mark.stripe
def test_the_payment_page_shows_the_token_with_a_retry_command(browser, user, billing_on):
    payment = PaymentFactory(user=user, paid=True)

    page = browser.get(reverse("billing:payment", args=[payment.pk])).content.decode()

    assert f'<code id="payment-token">{payment.token}</code>' in page
    assert f'-H "Payment-Token: {payment.token}"' in page
    assert "curl -X POST http://localhost:8000/api/v1/simulations" in page
    assert "data-copy" in page


@pytest.mark.stripe
def test_the_browser_that_paid_sees_the_token_without_logging_in(client, billing_on):
    payment = PaymentFactory(paid=True)

    page = client.get(
        reverse("billing:payment", args=[payment.pk]),
        {"checkout": "success", "session_id": payment.stripe_checkout_session_id},
    )

    assert page.status_code == 200
    assert payment.token in page.content.decode()


@pytest.mark.stripe
def test_nobody_else_sees_the_token(client, billing_on):
    payment = PaymentFactory(paid=True)
    stranger = Client()
    stranger.force_login(UserFactory())

    anonymous = client.get(reverse("billing:payment", args=[payment.pk]))
    wrong_session = client.get(
        reverse("billing:payment", args=[payment.pk]), {"session_id": "cs_test_guess"}
    )
    other_account = stranger.get(reverse("billing:payment", args=[payment.pk]))

    for response in (anonymous, wrong_session, other_account):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.stripe
def test_a_pending_payment_page_waits_for_stripe(browser, user, billing_on):
    payment = PaymentFactory(user=user)

    page = browser.get(
        reverse("billing:payment", args=[payment.pk]), {"checkout": "success"}
    ).content.decode()

    assert "Stripe is confirming your payment" in page
    assert 'http-equiv="refresh"' in page
    assert payment.checkout_url in page


def test_buying_a_pack_with_billing_off_says_so(browser):
    pack = CreditPackFactory()

    response = browser.post(reverse("billing:pack-buy", args=[pack.pk]), follow=True)

    assert "Billing is off" in response.content.decode()


@pytest.mark.stripe
def test_the_run_form_shows_the_checkout_link_when_the_run_must_be_paid(
    browser, bouncing_ball, billing_on
):
    response = browser.post(
        reverse("portal:model-run", args=[bouncing_ball.pk]), {"fmi_type": "CoSimulation"}
    )

    assert response.status_code == 402
    page = response.content.decode()
    assert 'href="https://checkout.stripe.com/c/pay/cs_test_' in page
    assert 'href="/pricing/"' in page
