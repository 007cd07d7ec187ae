"""Real gunicorn processes on PostgreSQL: money stays right under concurrency, across machines."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from accounts.tests.factories import UserFactory
from billing.models import LedgerEntry, LedgerKind, Payment
from billing.selectors import credit_balance
from billing.tests.factories import LedgerEntryFactory, PaymentFactory
from billing.tests.fake_stripe import pay_on_checkout
from simulations.models import Simulation
from simulations.tests.factories import upload_model
from testing.api import bearer_headers

pytestmark = [pytest.mark.live, pytest.mark.stripe, pytest.mark.django_db(transaction=True)]

CONCURRENT_REQUESTS = 20


@pytest.fixture
def customer(fmu_paths):
    """An account with an API key and a model, committed for the live servers to see."""
    user = UserFactory()
    model = upload_model(user, fmu_paths["bouncing_ball"])
    return user, bearer_headers(user), {"model": str(model.pk)}


def post_all_at_once(urls: list[str], body: dict, headers: dict) -> list[requests.Response]:
    """POST a run to each URL from its own thread, released together."""
    start = threading.Barrier(len(urls))

    def post(url: str) -> requests.Response:
        start.wait()
        return requests.post(f"{url}/api/v1/simulations", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return list(pool.map(post, urls))


def test_twenty_concurrent_requests_with_one_token_start_exactly_one_run(
    shared_billing_web, fake_stripe, customer
):
    user, headers, body = customer
    payment = PaymentFactory(user=user, paid=True)
    servers = shared_billing_web(2)
    urls = [servers[i % 2].url for i in range(CONCURRENT_REQUESTS)]

    responses = post_all_at_once(urls, body, {**headers, "Payment-Token": payment.token})

    statuses = [response.status_code for response in responses]
    assert statuses.count(202) == 1, statuses
    assert statuses.count(402) == CONCURRENT_REQUESTS - 1, statuses
    refusals = [response.json() for response in responses if response.status_code == 402]
    assert all(refusal["payment_token_status"] == "used" for refusal in refusals)
    assert all("already used" in refusal["detail"] for refusal in refusals)
    (run,) = Simulation.objects.filter(owner=user)
    payment.refresh_from_db()
    assert payment.token_used_at is not None
    assert payment.simulation_id == run.pk
    # Every refusal offered the same Checkout Session: one was created for them all.
    assert len({refusal["payment"]["id"] for refusal in refusals}) == 1
    assert len(fake_stripe.requests_to("POST", "/v1/checkout/sessions")) == 1


def test_twenty_concurrent_runs_on_five_credits_start_exactly_five(
    shared_billing_web, fake_stripe, customer
):
    user, headers, body = customer
    LedgerEntryFactory(user=user, amount_cents=500)
    servers = shared_billing_web(2)
    urls = [servers[i % 2].url for i in range(CONCURRENT_REQUESTS)]

    responses = post_all_at_once(urls, body, headers)

    statuses = [response.status_code for response in responses]
    assert statuses.count(202) == 5, statuses
    assert statuses.count(402) == CONCURRENT_REQUESTS - 5, statuses
    assert Simulation.objects.filter(owner=user).count() == 5
    assert credit_balance(user=user) == 0
    charges = LedgerEntry.objects.filter(user=user, kind=LedgerKind.CHARGE)
    assert charges.count() == 5
    # Each charge paid for one of the five runs: none was charged twice, none went unpaid.
    assert set(charges.values_list("simulation", flat=True)) == set(
        Simulation.objects.filter(owner=user).values_list("pk", flat=True)
    )


def test_a_402_from_one_machine_paid_through_another_is_redeemed_on_the_first(
    shared_billing_web, fake_stripe, customer, webhook
):
    _user, headers, body = customer
    machine_a, machine_b = shared_billing_web(2)

    refused = requests.post(f"{machine_a.url}/api/v1/simulations", json=body, headers=headers)
    assert refused.status_code == 402
    quote = refused.json()["payment"]

    session_id = Payment.objects.get(pk=quote["id"]).stripe_checkout_session_id
    assert pay_on_checkout(fake_stripe, webhook, session_id, to=machine_b.url) == 200

    status = requests.get(f"{machine_a.url}{quote['status_url']}", headers=headers).json()
    assert status["status"] == "paid"
    accepted = requests.post(
        f"{machine_a.url}/api/v1/simulations",
        json=body,
        headers={**headers, "Payment-Token": status["token"]},
    )
    assert accepted.status_code == 202, accepted.text
    # The servers run on the default price, $1.00 a run.
    assert accepted.json()["charge"] == {
        "kind": "token",
        "payment": quote["id"],
        "amount_cents": 100,
    }
