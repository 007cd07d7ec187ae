"""The 402 and Stripe Checkout: what a caller is sent to pay, for one run, one study or a
credit pack.

Payments and their Checkout Sessions are made outside any run's transaction, so they
survive the refusal that asked for them; the account row lock makes concurrent requests
of one account share one open Checkout Session instead of opening one each.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing import selectors, stripe_api
from billing.locks import lock_account
from billing.models import CreditPack, Payment, PaymentPurpose, PaymentStatus, money_text
from billing.services.common import price_text, study_price_cents
from billing.services.errors import PaymentRequired
from core.errors import Conflict

# A 402 reuses the open Payment only while its Checkout Session has this long left,
# so nobody is sent to a checkout page that closes while they type their card number.
OPEN_PAYMENT_MIN_REMAINING = timedelta(minutes=5)

# Stripe refuses a card payment below about 50 cents (its "minimum charge amount", per
# currency: 0.50 USD and EUR, 0.30 GBP ...). A study quoted below this is not sent to
# Checkout (Stripe would refuse it, and the caller would see a misleading 503): its 402
# sends the caller to buy credit instead.
CHECKOUT_MINIMUM_CENTS = 50


def run_payment_request(*, user: User, refused: PaymentRequired) -> PaymentRequired:
    """The complete 402 for a refused run: reuses the account's open Payment or makes one.

    Called after the run's transaction has rolled back, so the Checkout Session and the
    Payment row survive the refusal.
    """
    payment = run_payment_open_or_create(user=user)
    return PaymentRequired(
        f"{refused.detail} Pay {price_text()} at payment.checkout_url, then retry the same "
        "request with the header 'Payment-Token: <token>' (the token appears at "
        "payment.status_url once paid), or buy credits at credit_packs_url.",
        price=selectors.simulation_price(),
        payment=_payment_link(payment),
        credit_packs_url=reverse("billing:pricing"),
        code=refused.code,
        **refused.extra,
    )


def study_payment_request(*, user: User, refused: PaymentRequired, cases: int) -> PaymentRequired:
    """The complete 402 for a refused study of `cases` cases: ONE Checkout Session for
    the total (reusing the account's open one for a study of that size at today's price).

    Called after the study's transaction has rolled back. The body has what a run's 402
    has (`price` is then the price of one case) plus `cases`, `total` and `total_cents`.
    A total below Stripe's minimum charge gets no Checkout (`payment` null): the caller
    is sent to buy credit.
    """
    total = study_price_cents(cases=cases)
    quote = {
        "price": selectors.study_case_price(),
        "cases": cases,
        "total": money_text(total),
        "total_cents": total,
        "credit_packs_url": reverse("billing:pricing"),
    }
    if total < CHECKOUT_MINIMUM_CENTS:
        return PaymentRequired(
            f"{refused.detail} Card payments start at {money_text(CHECKOUT_MINIMUM_CENTS)}: "
            "buy credit at credit_packs_url, then retry the same request.",
            payment=None,
            code=refused.code,
            **quote,
            **refused.extra,
        )
    payment = study_payment_open_or_create(user=user, cases=cases)
    return PaymentRequired(
        f"{refused.detail} Pay {money_text(total)} for the {cases} cases at "
        "payment.checkout_url, then retry the same request with the header "
        "'Payment-Token: <token>' (the token appears at payment.status_url once paid; it "
        f"pays for one study of exactly {cases} cases), or buy credits at credit_packs_url.",
        payment=_payment_link(payment),
        code=refused.code,
        **quote,
        **refused.extra,
    )


def _payment_link(payment: Payment) -> dict[str, object]:
    return {
        "id": str(payment.pk),
        "checkout_url": payment.checkout_url,
        "expires_at": payment.expires_at.isoformat().replace("+00:00", "Z"),
        "status_url": reverse("api-payment", args=[payment.pk]),
        "token_ttl_seconds": settings.PAYMENT_TOKEN_TTL,
    }


def study_payment_open_or_create(*, user: User, cases: int) -> Payment:
    """The account's open Payment for a study of `cases` cases, or a new one with its
    Checkout Session (one line item: `cases` x the price of a case)."""
    with transaction.atomic():
        lock_account(user)
        payment = selectors.open_study_payment(
            user=user, cases=cases, valid_until=timezone.now() + OPEN_PAYMENT_MIN_REMAINING
        )
        if payment is not None:
            return payment
        payment = Payment.objects.create(
            user=user,
            purpose=PaymentPurpose.STUDY,
            cases=cases,
            amount_cents=study_price_cents(cases=cases),
            currency=settings.SIMULATION_PRICE_CURRENCY,
            expires_at=timezone.now() + timedelta(seconds=settings.CHECKOUT_SESSION_TTL),
        )
        _checkout_session_attach(
            payment,
            product_name="FMU Gateway: one case of a study",
            unit_amount_cents=settings.STUDY_CASE_PRICE_CENTS,
            quantity=cases,
        )
    return payment


def run_payment_open_or_create(*, user: User) -> Payment:
    """The account's open pay-per-run Payment, or a new one with its Checkout Session.

    The account row lock makes concurrent 402s of one account share one Checkout Session.
    """
    with transaction.atomic():
        lock_account(user)
        payment = selectors.open_run_payment(
            user=user, valid_until=timezone.now() + OPEN_PAYMENT_MIN_REMAINING
        )
        if payment is not None:
            return payment
        payment = Payment.objects.create(
            user=user,
            purpose=PaymentPurpose.RUN,
            amount_cents=settings.SIMULATION_PRICE_CENTS,
            currency=settings.SIMULATION_PRICE_CURRENCY,
            expires_at=timezone.now() + timedelta(seconds=settings.CHECKOUT_SESSION_TTL),
        )
        _checkout_session_attach(
            payment,
            product_name="FMU Gateway: one simulation run",
            unit_amount_cents=payment.amount_cents,
        )
    return payment


def credit_pack_checkout_start(*, user: User, credit_pack: CreditPack) -> Payment:
    """A Payment for a credit pack with its Checkout Session (reusing an open one)."""
    if not settings.BILLING_ENABLED:
        raise Conflict("Billing is off on this server: runs are free.")
    if not credit_pack.active:
        raise Conflict("This credit pack is no longer on sale.")
    with transaction.atomic():
        lock_account(user)
        payment = (
            Payment.objects.filter(
                user=user,
                purpose=PaymentPurpose.CREDIT_PACK,
                credit_pack=credit_pack,
                status=PaymentStatus.PENDING,
                amount_cents=credit_pack.price_cents,
                credit_cents=credit_pack.credit_cents,
                expires_at__gt=timezone.now() + OPEN_PAYMENT_MIN_REMAINING,
            )
            .exclude(checkout_url="")
            .first()
        )
        if payment is not None:
            return payment
        payment = Payment.objects.create(
            user=user,
            purpose=PaymentPurpose.CREDIT_PACK,
            credit_pack=credit_pack,
            credit_cents=credit_pack.credit_cents,
            amount_cents=credit_pack.price_cents,
            currency=credit_pack.currency,
            expires_at=timezone.now() + timedelta(seconds=settings.CHECKOUT_SESSION_TTL),
        )
        _checkout_session_attach(
            payment,
            product_name=(f"FMU Gateway: {credit_pack.name} ({credit_pack.credit_text} of credit)"),
            unit_amount_cents=payment.amount_cents,
        )
    return payment


def _checkout_session_attach(
    payment: Payment, *, product_name: str, unit_amount_cents: int, quantity: int = 1
) -> None:
    """Create the payment's Checkout Session; unit x quantity is the payment's amount."""
    if unit_amount_cents * quantity != payment.amount_cents:
        raise ValueError("The Checkout line item does not add up to the payment's amount.")
    page = settings.SITE_URL.rstrip("/") + reverse("billing:payment", args=[payment.pk])
    session = stripe_api.checkout_session_create(
        client_reference_id=str(payment.pk),
        product_name=product_name,
        amount_cents=unit_amount_cents,
        quantity=quantity,
        currency=payment.currency,
        expires_at=payment.expires_at,
        # Stripe fills in {CHECKOUT_SESSION_ID}; the page uses it to show the token to
        # the browser that paid, even when it is not logged in to the portal.
        success_url=f"{page}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{page}?checkout=cancelled",
        customer_email=payment.user.email,
        metadata={
            "payment_id": str(payment.pk),
            "purpose": payment.purpose,
            "user_id": str(payment.user_id),
        },
    )
    payment.stripe_checkout_session_id = session["id"]
    payment.checkout_url = session["url"]
    payment.expires_at = datetime.fromtimestamp(session["expires_at"], tz=UTC)
    payment.save(update_fields=["stripe_checkout_session_id", "checkout_url", "expires_at"])
