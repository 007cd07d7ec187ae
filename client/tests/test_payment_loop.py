"""Pay per run through the client (acceptance 2 of issue 6): 402 → Checkout → signed
webhook → token → the same request again, against a live gateway with billing on.

Stripe is the billing tests' fake (billing/tests/fake_stripe.py); the test plays the
customer paying on Checkout and delivers Stripe's signed webhook to the live server.
"""

from __future__ import annotations

import queue
import threading
from decimal import Decimal

import pytest
import requests
from django.db import connection
from fmugateway_client import PaymentFailed, PaymentRequired, Result

from billing.models import Payment
from billing.tests.fake_stripe import pay_on_checkout

pytestmark = [pytest.mark.live, pytest.mark.stripe]

CHECKOUT_LINE = "Pay here: "


def paid_on_checkout(fake_stripe, webhook, gateway, checkout_url: str) -> Payment:
    """The customer pays on the Checkout page; Stripe then tells the gateway, signed."""
    payment = Payment.objects.get(checkout_url=checkout_url)
    session_id = payment.stripe_checkout_session_id
    assert pay_on_checkout(fake_stripe, webhook, session_id, to=gateway.url) == 200
    return payment


def run_requests(gateway) -> list[requests.Response]:
    """Record every response the gateway's Client gets (with the request it answered)."""
    seen: list[requests.Response] = []
    gateway.client.session.hooks["response"].append(lambda response, **_: seen.append(response))
    return seen


def test_fmugw_run_pays_per_run_and_completes(
    paid_gateway, fake_stripe, webhook, fmu_paths, tmp_path
):
    gateway = paid_gateway
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])
    out = tmp_path / "out.csv"
    process = gateway.start_cli(
        "run",
        model.id,
        "--stop-time",
        "1",
        "--set",
        "e=0.8",
        "--wait-for-payment",  # as at a terminal: stdin is not one here
        "--progress",
        "-o",
        str(out),
    )
    stderr_lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [stderr_lines.put(line) for line in process.stderr], daemon=True
    )
    reader.start()
    try:
        checkout_url = None
        while checkout_url is None:
            line = stderr_lines.get(timeout=60)
            if line.startswith(CHECKOUT_LINE):
                checkout_url = line.removeprefix(CHECKOUT_LINE).strip()
        assert checkout_url.startswith("https://checkout.stripe.com/")
        # fmugw is now polling the payment; nothing has run yet.
        assert process.poll() is None
        assert gateway.client.simulations() == []
        payment = paid_on_checkout(fake_stripe, webhook, gateway, checkout_url)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    stderr = "".join(stderr_lines.queue)
    assert process.returncode == 0, stderr
    assert "100%" in stderr

    payment.refresh_from_db()
    assert payment.status == "paid"
    assert payment.token_used_at is not None
    run = gateway.client.simulation(str(payment.simulation_id))
    assert run.status == "succeeded"
    assert run.charge["kind"] == "token"
    assert run.charge["payment"] == str(payment.pk)
    servers_csv = requests.get(
        f"{gateway.url}{run.result_url}?format=csv",
        headers={"Authorization": f"Bearer {gateway.api_key}"},
        timeout=30,
    ).text
    assert out.read_text() == servers_csv
    assert len(gateway.client.simulations()) == 1  # one run, one charge


def test_simulate_waits_for_the_payment_then_retries_with_the_token_and_same_key(
    paid_gateway, fake_stripe, webhook, fmu_paths
):
    gateway = paid_gateway
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])
    responses = run_requests(gateway)
    notices: list[PaymentRequired] = []

    def pay(checkout_url: str) -> None:
        try:
            paid_on_checkout(fake_stripe, webhook, gateway, checkout_url)
        finally:
            connection.close()  # this thread's own database connection

    def pay_a_moment_later(required: PaymentRequired) -> None:
        """The checkout notice: the 'customer' pays while the client is already polling."""
        notices.append(required)
        threading.Timer(1.0, pay, args=(required.checkout_url,)).start()

    result = gateway.client.simulate(
        model,
        stop_time=1.0,
        on_payment_required="wait",
        checkout_notice=pay_a_moment_later,
        payment_poll_interval=0.2,
        payment_timeout=60,  # should the delivery fail, fail within a minute
    )

    assert isinstance(result, Result) and result.simulation is not None
    assert result.simulation.charge["kind"] == "token"
    (required,) = notices
    assert required.price is not None and required.price.amount == Decimal("1.00")
    assert required.status_url == f"/api/v1/payments/{required.payment_id}"

    posts = [r for r in responses if r.request.method == "POST"]
    assert [r.status_code for r in posts] == [402, 202]
    first, retry = (r.request.headers for r in posts)
    assert "Payment-Token" not in first
    assert retry["Payment-Token"] == Payment.objects.get(pk=required.payment_id).token
    assert first["Idempotency-Key"] == retry["Idempotency-Key"]
    polls = [r.json()["status"] for r in responses if "/payments/" in r.request.url]
    assert polls[0] == "pending" and polls[-1] == "paid"

    # A second run on the same account needs a new payment: the token paid for one run.
    with pytest.raises(PaymentRequired) as again:
        gateway.client.simulate(model, stop_time=1.0)
    assert again.value.payment_id != required.payment_id


def test_without_waiting_a_402_raises_and_fmugw_exits_3_then_runs_with_the_token(
    paid_web_only, fake_stripe, webhook, fmu_paths
):
    gateway = paid_web_only
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])

    with pytest.raises(PaymentRequired) as refused:
        gateway.client.simulate(model, stop_time=1.0)
    required = refused.value
    assert required.status == 402
    assert required.type.endswith("/errors/payment-required")
    assert required.checkout_url.startswith("https://checkout.stripe.com/")
    assert required.status_url == f"/api/v1/payments/{required.payment_id}"
    assert required.expires_at is not None
    assert required.token_ttl_seconds == 1800
    assert required.credit_packs_url == "/pricing/"
    assert str(required.price) == "$1.00"
    assert required.payment_token_status == "none"
    assert gateway.client.payment(required.payment_id).status == "pending"

    # Not attached to a terminal, fmugw does not wait: it shows the link and exits 3.
    cli = gateway.cli("run", model.id, "--stop-time", "1")
    assert cli.returncode == 3, cli.stderr
    assert f"Pay here: {required.checkout_url}" in cli.stderr  # the same open payment
    assert f"fmugw payment {required.payment_id}" in cli.stderr
    assert gateway.client.simulations() == []

    # A made-up token is refused the same way, saying why.
    with pytest.raises(PaymentRequired) as bad_token:
        gateway.client.simulate(model, stop_time=1.0, payment_token="pt_made_up")
    assert bad_token.value.payment_token_status == "invalid"

    # The user pays, reads the token with `fmugw payment` and runs again with it.
    paid_on_checkout(fake_stripe, webhook, gateway, required.checkout_url)
    shown = gateway.cli("payment", required.payment_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[:2] == [required.payment_id, "paid"]
    token = shown.stdout.split("token ")[1].split()[0]
    assert token == Payment.objects.get(pk=required.payment_id).token
    queued = gateway.cli("run", model.id, "--stop-time", "1", "--payment-token", token, "--no-wait")
    assert queued.returncode == 0, queued.stderr
    (run,) = gateway.client.simulations()
    assert queued.stdout.strip() == run.id
    # The server runs on the default price, $1.00 a run.
    assert run.charge == {"kind": "token", "payment": required.payment_id, "amount_cents": 100}


def test_an_expired_checkout_ends_the_wait_with_payment_failed(
    paid_web_only, fake_stripe, webhook, fmu_paths
):
    gateway = paid_web_only
    model = gateway.client.upload_model(fmu_paths["bouncing_ball"])

    def expire_it(required: PaymentRequired) -> None:
        assert required.payment_id is not None
        session_id = Payment.objects.get(pk=required.payment_id).stripe_checkout_session_id
        fake_stripe.expire(session_id)
        event = fake_stripe.session_event("checkout.session.expired", session_id)
        assert webhook.deliver(event, to=gateway.url) == 200

    with pytest.raises(PaymentFailed) as failed:
        gateway.client.simulate(
            model,
            stop_time=1.0,
            on_payment_required="wait",
            checkout_notice=expire_it,
            payment_poll_interval=0.2,
            payment_timeout=60,
        )
    assert failed.value.payment.status == "expired"
    assert gateway.client.simulations() == []
