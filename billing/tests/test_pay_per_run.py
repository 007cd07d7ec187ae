"""Pay per run: 402 with a Checkout link, a signed webhook, the token, the retry."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from billing.models import Payment, PaymentStatus
from billing.tests.factories import PaymentFactory
from billing.tests.fake_stripe import pay_on_checkout
from simulations import services as simulation_services
from simulations.models import Simulation, SimulationStatus
from testing.api import run_request

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"


def pay_and_notify(fake, webhook, payment_id: str) -> None:
    """The customer pays on Checkout and Stripe tells us so."""
    session_id = Payment.objects.get(pk=payment_id).stripe_checkout_session_id
    assert pay_on_checkout(fake, webhook, session_id, to=Client()) == 200


@pytest.mark.stripe
def test_a_run_is_paid_on_checkout_and_retried_with_the_token(
    api_client, bouncing_ball, billing_on, webhook, monkeypatch
):
    fake = billing_on
    body = run_request(bouncing_ball)

    refused = api_client.post(SIMULATIONS_URL, body, format="json")

    assert refused.status_code == 402
    assert refused["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/errors/payment-required")
    assert problem["title"] == "Payment required"
    assert problem["status"] == 402
    assert "no credit" in problem["detail"]
    assert problem["price"] == {"amount": "1.00", "currency": "usd"}
    assert problem["credit_packs_url"] == "/pricing/"
    quote = problem["payment"]
    assert quote["checkout_url"].startswith("https://checkout.stripe.com/")
    assert quote["status_url"] == f"/api/v1/payments/{quote['id']}"
    assert quote["token_ttl_seconds"] == 1800
    assert not Simulation.objects.exists()

    # The Checkout Session: one payment of the run price, tied to this Payment.
    payment = Payment.objects.get(pk=quote["id"])
    session = fake.session_view(payment.stripe_checkout_session_id)
    assert session["mode"] == "payment"
    assert (session["amount_total"], session["currency"]) == (100, "usd")
    assert session["client_reference_id"] == quote["id"]
    assert session["url"] == quote["checkout_url"]
    expires_in = session["expires_at"] - timezone.now().timestamp()
    assert 59 * 60 < expires_in <= 60 * 60
    assert quote["expires_at"] == datetime.fromtimestamp(
        session["expires_at"], UTC
    ).isoformat().replace("+00:00", "Z")
    assert session["success_url"].startswith(
        f"http://localhost:8000/billing/payments/{payment.pk}/"
    )
    assert "{CHECKOUT_SESSION_ID}" in session["success_url"]
    assert session["cancel_url"].startswith(f"http://localhost:8000/billing/payments/{payment.pk}/")

    pending = api_client.get(quote["status_url"]).json()
    assert pending["status"] == "pending"
    assert "token" not in pending

    pay_and_notify(fake, webhook, quote["id"])

    paid = api_client.get(quote["status_url"]).json()
    assert paid["status"] == "paid"
    token = paid["token"]
    assert token.startswith("pt_")
    assert paid["token_status"] == "unused"
    payment.refresh_from_db()
    assert payment.token_expires_at - payment.paid_at == timedelta(minutes=30)

    accepted = api_client.post(SIMULATIONS_URL, body, format="json", HTTP_PAYMENT_TOKEN=token)

    assert accepted.status_code == 202, accepted.content
    run = accepted.json()
    assert run["charge"] == {
        "kind": "token",
        "payment": quote["id"],
        "amount_cents": django_settings.SIMULATION_PRICE_CENTS,
    }
    finished = simulation_services.simulation_execute(simulation_id=run["id"])
    assert finished.status == SimulationStatus.SUCCEEDED
    assert api_client.get(quote["status_url"]).json()["simulation"] == run["id"]

    reused = api_client.post(SIMULATIONS_URL, body, format="json", HTTP_PAYMENT_TOKEN=token)

    assert reused.status_code == 402
    assert "already used" in reused.json()["detail"]
    assert reused.json()["payment_token_status"] == "used"
    assert Simulation.objects.count() == 1

    # A second payment; its token is presented 31 minutes after it was minted.
    second = api_client.post(SIMULATIONS_URL, body, format="json").json()["payment"]
    assert second["id"] != quote["id"]
    pay_and_notify(fake, webhook, second["id"])
    late_token = api_client.get(second["status_url"]).json()["token"]
    later = timezone.now() + timedelta(minutes=31)
    monkeypatch.setattr(timezone, "now", lambda: later)

    expired = api_client.post(SIMULATIONS_URL, body, format="json", HTTP_PAYMENT_TOKEN=late_token)

    assert expired.status_code == 402
    assert "expired" in expired.json()["detail"]
    assert expired.json()["payment_token_status"] == "expired"
    assert Simulation.objects.count() == 1


@pytest.mark.stripe
def test_a_second_402_reuses_the_open_payment(api_client, bouncing_ball, billing_on):
    first = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")
    second = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert first.status_code == second.status_code == 402
    assert first.json()["payment"] == second.json()["payment"]
    assert len(billing_on.requests_to("POST", "/v1/checkout/sessions")) == 1


@pytest.mark.stripe
def test_a_payment_whose_checkout_expired_is_not_reused(api_client, bouncing_ball, billing_on):
    first = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")
    Payment.objects.filter(pk=first.json()["payment"]["id"]).update(
        expires_at=timezone.now() + timedelta(minutes=2)
    )

    second = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert second.json()["payment"]["id"] != first.json()["payment"]["id"]
    assert len(billing_on.requests_to("POST", "/v1/checkout/sessions")) == 2


@pytest.mark.stripe
def test_another_accounts_token_is_refused_without_saying_it_exists(
    api_client, bouncing_ball, billing_on
):
    someone_elses = PaymentFactory(paid=True)

    response = api_client.post(
        SIMULATIONS_URL,
        run_request(bouncing_ball),
        format="json",
        HTTP_PAYMENT_TOKEN=someone_elses.token,
    )

    assert response.status_code == 402
    assert response.json()["payment_token_status"] == "invalid"
    assert "not valid for this account" in response.json()["detail"]
    someone_elses.refresh_from_db()
    assert someone_elses.token_used_at is None


@pytest.mark.stripe
def test_a_made_up_token_gets_the_same_answer(api_client, bouncing_ball, billing_on):
    response = api_client.post(
        SIMULATIONS_URL, run_request(bouncing_ball), format="json", HTTP_PAYMENT_TOKEN="pt_nope"
    )

    assert response.status_code == 402
    assert response.json()["payment_token_status"] == "invalid"
    assert response.json()["payment"]["checkout_url"]


@pytest.mark.stripe
def test_a_run_uses_credit_before_a_token(api_client, bouncing_ball, billing_on):
    from billing.tests.factories import LedgerEntryFactory

    LedgerEntryFactory(user=api_client.user, amount_cents=100)
    payment = PaymentFactory(user=api_client.user, paid=True)

    response = api_client.post(
        SIMULATIONS_URL, run_request(bouncing_ball), format="json", HTTP_PAYMENT_TOKEN=payment.token
    )

    assert response.status_code == 202
    assert response.json()["charge"]["kind"] == "credit"
    payment.refresh_from_db()
    assert payment.token_state == "unused"


@pytest.mark.stripe
def test_the_payment_api_shows_a_payment_to_its_owner_only(api_client, billing_on):
    mine = PaymentFactory(user=api_client.user, paid=True)
    theirs = PaymentFactory(paid=True)

    own = api_client.get(f"/api/v1/payments/{mine.pk}")
    other = api_client.get(f"/api/v1/payments/{theirs.pk}")

    assert own.status_code == 200
    assert own.json()["token"] == mine.token
    assert (own.json()["amount"], own.json()["amount_cents"]) == ("1.00", 100)
    assert own.json()["currency"] == "usd"
    assert other.status_code == 404
    assert theirs.token not in other.content.decode()


@pytest.mark.stripe
def test_a_stripe_outage_is_a_503_and_leaves_no_payment(
    api_client, bouncing_ball, billing_on, settings
):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there

    response = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert not Payment.objects.exists()
    assert not Simulation.objects.exists()


def test_billing_off_runs_are_free_and_need_no_payment(api_client, bouncing_ball):
    response = api_client.post(SIMULATIONS_URL, run_request(bouncing_ball), format="json")

    assert response.status_code == 202
    assert response.json()["charge"] == {"kind": "free"}
    assert not Payment.objects.exists()


@pytest.mark.stripe
def test_the_account_shows_the_balance_and_billing_mode(api_client, billing_on):
    from billing.tests.factories import LedgerEntryFactory

    LedgerEntryFactory(user=api_client.user, amount_cents=700)

    account = api_client.get("/api/v1/account").json()

    assert (account["balance_cents"], account["balance"]) == (700, "$7.00")
    assert account["credit_balance"] == 7  # deprecated: whole runs at today's price
    assert account["billing_mode"] == "test"
    assert account["price"] == {"amount": "1.00", "currency": "usd"}
    assert account["study_case_price"] == {"amount": "0.02", "currency": "usd"}


@pytest.mark.stripe
def test_payment_status_stays_paid_after_the_token_is_used(api_client, billing_on):
    payment = PaymentFactory(user=api_client.user, paid=True)
    Payment.objects.filter(pk=payment.pk).update(token_used_at=timezone.now())

    shown = api_client.get(f"/api/v1/payments/{payment.pk}").json()

    assert shown["status"] == PaymentStatus.PAID
    assert shown["token_status"] == "used"
