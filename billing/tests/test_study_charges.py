"""Paying for a study: one debit for all its cases, one Checkout for all of them, a token
that pays for exactly that study, and cases given back in parts, never more than paid."""

import pytest
from django.core.management import call_command
from django.test import Client

from billing import services
from billing.charges import Charge, ChargeKind
from billing.models import LedgerEntry, LedgerKind, Payment, PaymentPurpose, PaymentStatus
from billing.selectors import credit_balance
from billing.services import PaymentRequired
from billing.tests.factories import LedgerEntryFactory, PaymentFactory
from billing.tests.fake_stripe import pay_on_checkout
from core.handlers import problem_exception_handler
from simulations.models import Study

pytestmark = pytest.mark.django_db

CASES = 500  # at the default 2 cents a case: $10.00


def study_of(user, cases: int = CASES) -> Study:
    """A study row as simulations makes it (billing only links to it)."""
    return Study.objects.create(
        owner=user,
        model_name="BouncingBall",
        base={},
        design={},
        case_count=cases,
        price_cents=services.study_price_cents(cases=cases),
    )


def refused(user, cases: int = CASES, token: str | None = None) -> PaymentRequired:
    with pytest.raises(PaymentRequired) as raised:
        services.study_charge_take(user=user, cases=cases, payment_token=token)
    return raised.value


def problem(exc: PaymentRequired) -> dict:
    """The 402's problem+json body, as the API answers it."""
    response = problem_exception_handler(exc, {})
    assert response is not None and response.status_code == 402
    return dict(response.data)


def test_a_study_costs_its_cases_at_the_price_of_one(settings):
    settings.STUDY_CASE_PRICE_CENTS = 3

    assert services.study_price_cents(cases=500) == 1500
    assert services.study_price_cents(cases=1) == 3


def test_with_billing_off_a_study_is_free_and_touches_no_money(user):
    charge = services.study_charge_take(user=user, cases=CASES)

    assert charge == Charge(kind=ChargeKind.FREE, cases=CASES)
    assert charge.to_json() == {"kind": "free", "cases": CASES}
    assert not LedgerEntry.objects.exists()
    # Giving back part of a free study gives nothing.
    assert services.study_charge_give_back(charge=charge, cents=40, reason="cancelled") == charge
    assert not LedgerEntry.objects.exists()


@pytest.mark.stripe
def test_credit_pays_a_whole_study_with_one_debit_linked_to_it(user, billing_on):
    LedgerEntryFactory(user=user, amount_cents=1500)

    charge = services.study_charge_take(user=user, cases=CASES)
    study = study_of(user)
    services.study_charge_link(charge=charge, study=study)

    debit = LedgerEntry.objects.get(kind=LedgerKind.CHARGE)
    assert (debit.amount_cents, debit.study_id, debit.simulation_id) == (-1000, study.pk, None)
    assert charge == Charge(
        kind=ChargeKind.CREDIT, ledger_entry=debit.pk, amount_cents=1000, cases=CASES
    )
    assert credit_balance(user=user) == 500


@pytest.mark.stripe
def test_credit_short_of_the_whole_study_pays_nothing_and_says_what_it_costs(user, billing_on):
    LedgerEntryFactory(user=user, amount_cents=999)

    error = refused(user)

    assert error.detail == "You have $9.99 of credit: this study of 500 cases costs $10.00."
    assert error.extra == {"payment_token_status": "none"}
    assert credit_balance(user=user) == 999
    assert LedgerEntry.objects.count() == 1


@pytest.mark.stripe
def test_the_402_quotes_one_checkout_for_all_cases_and_its_token_pays_the_study(
    user, billing_on, webhook
):
    body = problem(services.study_payment_request(user=user, refused=refused(user), cases=CASES))

    assert body["status"] == 402
    assert (body["cases"], body["total"], body["total_cents"]) == (CASES, "$10.00", 1000)
    assert body["price"] == {"amount": "0.02", "currency": "usd"}  # one case
    assert body["payment_token_status"] == "none"
    assert body["credit_packs_url"] == "/pricing/"
    assert "You have no credit: this study of 500 cases costs $10.00." in body["detail"]
    quote = body["payment"]
    assert set(quote) == {"id", "checkout_url", "expires_at", "status_url", "token_ttl_seconds"}
    payment = Payment.objects.get(pk=quote["id"])
    assert (payment.purpose, payment.cases, payment.amount_cents) == (
        PaymentPurpose.STUDY,
        CASES,
        1000,
    )
    session = billing_on.sessions[payment.stripe_checkout_session_id]
    ((item,),) = [session["_line_items"]]
    assert (item["quantity"], item["price"]["unit_amount"], session["amount_total"]) == (
        CASES,
        2,
        1000,
    )

    # Asked again before paying: the same Payment and Checkout Session.
    again = services.study_payment_request(user=user, refused=refused(user), cases=CASES)
    assert again.extra["payment"]["id"] == quote["id"]
    assert len(billing_on.requests_to("POST", "/v1/checkout/sessions")) == 1

    assert pay_on_checkout(billing_on, webhook, payment.stripe_checkout_session_id, to=Client())
    payment.refresh_from_db()
    assert (payment.status, payment.token_state) == (PaymentStatus.PAID, "unused")
    assert credit_balance(user=user) == 0  # a token, not credit

    charge = services.study_charge_take(user=user, cases=CASES, payment_token=payment.token)
    study = study_of(user)
    services.study_charge_link(charge=charge, study=study)

    assert charge == Charge(
        kind=ChargeKind.TOKEN, payment=str(payment.pk), amount_cents=1000, cases=CASES
    )
    payment.refresh_from_db()
    assert (payment.token_state, payment.study_id) == ("used", study.pk)
    assert refused(user, token=payment.token).extra["payment_token_status"] == "used"
    assert not LedgerEntry.objects.exists()


@pytest.mark.stripe
def test_a_token_pays_only_what_it_was_bought_for(user, billing_on):
    study_token = PaymentFactory(
        user=user, paid=True, purpose=PaymentPurpose.STUDY, cases=CASES, amount_cents=1000
    )
    run_token = PaymentFactory(user=user, paid=True)

    other_size = refused(user, cases=CASES - 1, token=study_token.token)
    run_for_study = refused(user, cases=CASES, token=run_token.token)
    with pytest.raises(PaymentRequired) as study_for_run:
        services.run_charge_take(user=user, payment_token=study_token.token)

    assert other_size.extra["payment_token_status"] == "mismatch"
    assert other_size.detail == (
        "This payment token pays for one study of 500 cases, not for one study of 499 cases."
    )
    assert run_for_study.extra["payment_token_status"] == "mismatch"
    assert "pays for one run, not for one study of 500 cases" in run_for_study.detail
    assert study_for_run.value.extra["payment_token_status"] == "mismatch"
    study_token.refresh_from_db()
    run_token.refresh_from_db()
    assert study_token.token_state == run_token.token_state == "unused"  # neither spent
    assert services.study_charge_take(
        user=user, cases=CASES, payment_token=study_token.token
    ).is_paid


@pytest.mark.stripe
def test_a_study_below_the_smallest_card_payment_is_sent_to_buy_credit(user, billing_on):
    body = problem(services.study_payment_request(user=user, refused=refused(user, 10), cases=10))

    assert (body["cases"], body["total"], body["payment"]) == (10, "$0.20", None)
    assert "buy credit at credit_packs_url" in body["detail"]
    assert not Payment.objects.exists()
    assert billing_on.requests_to("POST", "/v1/checkout/sessions") == []


@pytest.mark.stripe
def test_parts_of_a_study_are_given_back_never_more_than_it_cost(user, billing_on):
    LedgerEntryFactory(user=user, amount_cents=1000)
    first = services.study_charge_take(user=user, cases=CASES)
    study = study_of(user)
    services.study_charge_link(charge=first, study=study)
    assert credit_balance(user=user) == 0

    second = services.study_charge_give_back(charge=first, cents=40, reason="20 cases cancelled")
    third = services.study_charge_give_back(charge=second, cents=60, reason="30 cases failed")

    assert (third.refunded_cents, third.refunded, third.refund_reason) == (
        100,
        False,
        "30 cases failed",
    )
    refunds = LedgerEntry.objects.filter(kind=LedgerKind.REFUND).order_by("pk")
    assert [(r.amount_cents, r.study_id) for r in refunds] == [(40, study.pk), (60, study.pk)]
    assert third.refund_ledger_entry == refunds.last().pk
    assert credit_balance(user=user) == 100

    # More than is left: only what is left; then nothing, even from a stale copy.
    last = services.study_charge_give_back(charge=third, cents=5000, reason="all failed")
    stale = services.study_charge_give_back(charge=first, cents=40, reason="cancelled again")

    assert (last.refunded_cents, last.refunded) == (1000, True)
    assert LedgerEntry.objects.filter(kind=LedgerKind.REFUND).latest("pk").amount_cents == 900
    assert stale == first
    assert credit_balance(user=user) == 1000
    assert Charge.from_json(last.to_json()) == last


@pytest.mark.stripe
def test_a_token_paid_study_is_given_back_as_credit_which_a_stripe_refund_takes_back(
    user, billing_on, webhook
):
    services.study_payment_request(user=user, refused=refused(user), cases=CASES)
    payment = Payment.objects.get(purpose=PaymentPurpose.STUDY)
    pay_on_checkout(billing_on, webhook, payment.stripe_checkout_session_id, to=Client())
    payment.refresh_from_db()
    charge = services.study_charge_take(user=user, cases=CASES, payment_token=payment.token)
    services.study_charge_link(charge=charge, study=study_of(user))

    given_back = services.study_charge_give_back(charge=charge, cents=300, reason="failed")

    refund = LedgerEntry.objects.get(kind=LedgerKind.REFUND)
    assert (refund.amount_cents, refund.payment_id) == (300, payment.pk)
    assert given_back.refunded_cents == 300
    assert credit_balance(user=user) == 300

    # The card payment refunded in Stripe: the credit it turned into is taken back.
    stripe_charge = billing_on.refund(payment.stripe_checkout_session_id)
    assert (
        webhook.deliver(
            billing_on.charge_event("charge.refunded", stripe_charge["id"]), to=Client()
        )
        == 200
    )

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    revocation = LedgerEntry.objects.get(kind=LedgerKind.REVOCATION)
    assert (revocation.amount_cents, revocation.payment_id) == (-300, payment.pk)
    assert credit_balance(user=user) == 0


@pytest.mark.stripe
def test_reconciliation_fulfils_a_missed_study_payment_once_and_the_money_adds_up(
    user, billing_on, webhook
):
    LedgerEntryFactory(user=user, amount_cents=250)
    services.study_payment_request(user=user, refused=refused(user), cases=CASES)
    payment = Payment.objects.get(purpose=PaymentPurpose.STUDY)
    billing_on.pay(payment.stripe_checkout_session_id)  # no webhook arrives

    call_command("reconcile_payments")
    call_command("reconcile_payments")
    event = billing_on.session_event(
        "checkout.session.completed", payment.stripe_checkout_session_id
    )
    assert webhook.deliver(event, to=Client()) == 200  # late, changes nothing

    payment.refresh_from_db()
    assert (payment.status, payment.token_state) == (PaymentStatus.PAID, "unused")
    token = payment.token
    charge = services.study_charge_take(user=user, cases=CASES, payment_token=token)
    services.study_charge_link(charge=charge, study=study_of(user))
    charge = services.study_charge_give_back(charge=charge, cents=120, reason="60 cases failed")
    call_command("reconcile_payments")

    payment.refresh_from_db()
    assert payment.token == token
    # What Stripe took is what we asked for; the balance is what was put in minus nothing
    # taken from credit (the token paid) plus what was given back.
    assert billing_on.sessions[payment.stripe_checkout_session_id]["amount_total"] == 1000
    assert credit_balance(user=user) == 250 + 120
    kinds = sorted(LedgerEntry.objects.values_list("kind", "amount_cents"))
    assert kinds == [("grant", 250), ("refund", 120)]


@pytest.mark.stripe
def test_a_study_payment_shows_its_cases_in_the_api_and_on_its_page(
    api_client, browser, user, billing_on
):
    mine = PaymentFactory(
        user=api_client.user,
        paid=True,
        purpose=PaymentPurpose.STUDY,
        cases=CASES,
        amount_cents=1000,
    )
    page_payment = PaymentFactory(
        user=user, paid=True, purpose=PaymentPurpose.STUDY, cases=CASES, amount_cents=1000
    )

    shown = api_client.get(f"/api/v1/payments/{mine.pk}").json()
    page = browser.get(f"/billing/payments/{page_payment.pk}/").content.decode()

    assert (shown["purpose"], shown["cases"], shown["amount"], shown["amount_cents"]) == (
        "study",
        CASES,
        "10.00",
        1000,
    )
    assert (shown["token"], shown["token_status"], shown["credit_pack"]) == (
        mine.token,
        "unused",
        None,
    )
    assert "Payment for one study of 500 cases" in page
    assert f'<code id="payment-token">{page_payment.token}</code>' in page
    assert "one study of exactly 500 cases" in page
    assert "retry-command" not in page  # the curl line is a run's


@pytest.mark.stripe
def test_billing_history_shows_a_study_debit_and_its_refund_in_money(browser, user, billing_on):
    LedgerEntryFactory(user=user, amount_cents=1500, reason="welcome")
    charge = services.study_charge_take(user=user, cases=CASES)
    services.study_charge_link(charge=charge, study=study_of(user))
    services.study_charge_give_back(charge=charge, cents=40, reason="20 cases cancelled")

    page = browser.get("/billing/").content.decode()

    assert '<strong id="balance">$5.40</strong>' in page
    assert "-$10.00" in page and "+$0.40" in page
    assert "study of 500 cases (BouncingBall)" in page
