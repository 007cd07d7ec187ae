"""Reads about money: billing mode, prices, balances (cents), and an owner's payments and
ledger."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet, Sum

from accounts.models import User
from billing.models import (
    CreditPack,
    LedgerEntry,
    Payment,
    PaymentPurpose,
    PaymentStatus,
    format_cents,
    money_text,
)


def billing_mode() -> str:
    """ "off" (runs are free), "test" or "live" (Stripe keys of that mode)."""
    if not settings.BILLING_ENABLED:
        return "off"
    return "live" if settings.STRIPE_LIVE_MODE else "test"


def simulation_price() -> dict[str, str]:
    return {
        "amount": format_cents(settings.SIMULATION_PRICE_CENTS),
        "currency": settings.SIMULATION_PRICE_CURRENCY,
    }


def study_case_price() -> dict[str, str]:
    """What one case of a study costs (studies are priced per case)."""
    return {
        "amount": format_cents(settings.STUDY_CASE_PRICE_CENTS),
        "currency": settings.SIMULATION_PRICE_CURRENCY,
    }


def credit_balance(*, user: User | AnonymousUser | None) -> int:
    """Money the account has prepaid, in cents: the sum of its ledger."""
    user_id: int | None = getattr(user, "pk", None)  # None for no user or an anonymous one
    if not user_id:
        return 0
    total = LedgerEntry.objects.filter(user_id=user_id).aggregate(total=Sum("amount_cents"))
    return total["total"] or 0


def credit_balance_text(*, user: User | AnonymousUser | None) -> str:
    """The balance as people read it: "$12.34"."""
    return money_text(credit_balance(user=user))


def credits_given_by_payment(*, payment: Payment) -> int:
    """Credit (cents) this payment put in the balance and that was not taken back since."""
    total = LedgerEntry.objects.filter(payment=payment).aggregate(total=Sum("amount_cents"))
    return max(total["total"] or 0, 0)


def credit_packs_on_sale() -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(active=True)


def open_run_payment(*, user: User, valid_until: datetime) -> Payment | None:
    """The account's pending pay-per-run Payment, at today's price, open until valid_until."""
    return (
        Payment.objects.filter(
            user=user,
            purpose=PaymentPurpose.RUN,
            status=PaymentStatus.PENDING,
            amount_cents=settings.SIMULATION_PRICE_CENTS,
            currency=settings.SIMULATION_PRICE_CURRENCY,
            expires_at__gt=valid_until,
        )
        .exclude(checkout_url="")
        .order_by("-created_at")
        .first()
    )


def open_study_payment(*, user: User, cases: int, valid_until: datetime) -> Payment | None:
    """The account's pending Payment for a study of exactly `cases` cases, at today's
    price, open until valid_until."""
    return (
        Payment.objects.filter(
            user=user,
            purpose=PaymentPurpose.STUDY,
            status=PaymentStatus.PENDING,
            cases=cases,
            amount_cents=cases * settings.STUDY_CASE_PRICE_CENTS,
            currency=settings.SIMULATION_PRICE_CURRENCY,
            expires_at__gt=valid_until,
        )
        .exclude(checkout_url="")
        .order_by("-created_at")
        .first()
    )


def payments_for_owner(*, owner: User) -> QuerySet[Payment]:
    return Payment.objects.filter(user=owner).select_related("credit_pack")


def payment_for_owner(*, owner: User, payment_id: uuid.UUID | str) -> Payment:
    """Raises Payment.DoesNotExist for another account's payment, as for a missing one."""
    return payments_for_owner(owner=owner).get(pk=payment_id)


def ledger_for_owner(*, owner: User) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(user=owner).select_related("payment", "simulation", "study")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
