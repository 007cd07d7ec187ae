"""Reads about money: billing mode, price, balances, and an owner's payments and ledger."""

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


def credit_balance(*, user: User | AnonymousUser | None) -> int:
    """Runs the account has prepaid: the sum of its ledger."""
    user_id: int | None = getattr(user, "pk", None)  # None for no user or an anonymous one
    if not user_id:
        return 0
    total = LedgerEntry.objects.filter(user_id=user_id).aggregate(total=Sum("runs"))["total"]
    return total or 0


def credits_given_by_payment(*, payment: Payment) -> int:
    """Credits this payment put in the balance and that were not taken back since."""
    total = LedgerEntry.objects.filter(payment=payment).aggregate(total=Sum("runs"))["total"]
    return max(total or 0, 0)


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


def payments_for_owner(*, owner: User) -> QuerySet[Payment]:
    return Payment.objects.filter(user=owner).select_related("credit_pack")


def payment_for_owner(*, owner: User, payment_id: uuid.UUID | str) -> Payment:
    """Raises Payment.DoesNotExist for another account's payment, as for a missing one."""
    return payments_for_owner(owner=owner).get(pk=payment_id)


def ledger_for_owner(*, owner: User) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(user=owner).select_related("payment", "simulation")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
