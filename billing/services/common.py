"""Small helpers more than one of billing's service modules use."""

from __future__ import annotations

from django.utils import timezone

from billing import selectors
from billing.models import Payment


def price_text() -> str:
    """The price of one run as people read it: "$1.00", or "1.00 EUR"."""
    price = selectors.simulation_price()
    symbol = "$" if price["currency"] == "usd" else ""
    suffix = "" if symbol else f" {price['currency'].upper()}"
    return f"{symbol}{price['amount']}{suffix}"


def payment_note(payment: Payment, text: str) -> None:
    """Append a timestamped line to the payment's notes (saved by the caller)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    payment.notes = f"{payment.notes}\n{stamp} {text}".strip()
