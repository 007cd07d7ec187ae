"""Small helpers more than one of billing's service modules use."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from billing.models import Payment, money_text


def price_text() -> str:
    """The price of one run as people read it: "$1.00", or "1.00 EUR"."""
    return money_text(settings.SIMULATION_PRICE_CENTS)


def study_price_cents(*, cases: int) -> int:
    """What a study of `cases` cases costs, in cents (the same whether billing is on)."""
    return cases * settings.STUDY_CASE_PRICE_CENTS


def payment_note(payment: Payment, text: str) -> None:
    """Append a timestamped line to the payment's notes (saved by the caller)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    payment.notes = f"{payment.notes}\n{stamp} {text}".strip()
