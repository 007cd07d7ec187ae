"""Reads about money: billing mode, price, and an account's credit balance."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings


def billing_mode() -> str:
    """ "off" (runs are free), "test" or "live" (Stripe keys of that mode)."""
    if not settings.BILLING_ENABLED:
        return "off"
    return "live" if settings.STRIPE_LIVE_MODE else "test"


def simulation_price() -> dict[str, str]:
    amount = Decimal(settings.SIMULATION_PRICE_CENTS) / 100
    return {"amount": f"{amount:.2f}", "currency": settings.SIMULATION_PRICE_CURRENCY}


def credit_balance(*, user) -> int:
    """Runs the account has prepaid. The credit ledger arrives with billing; until then none."""
    return 0
