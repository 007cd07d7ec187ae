"""Writes about money. Every run creation asks here how it is paid for."""

from __future__ import annotations

from django.conf import settings

from fmugateway.problems import DomainError


class PaymentRequired(DomainError):
    status_code = 402
    code = "payment-required"


class BillingUnavailable(DomainError):
    status_code = 503
    code = "billing-unavailable"


def charge_for_run(*, user, payment_token: str | None = None) -> dict:
    """Pay for one new run inside the caller's transaction, or raise PaymentRequired.

    Returns the charge as stored on the run ({"kind": "free"|"credit"|"token", ...}).
    With billing off every run is free. Credits, payment tokens and Stripe Checkout
    are built by the billing issue; until then a server with Stripe keys refuses runs
    rather than giving them away.
    """
    if not settings.BILLING_ENABLED:
        return {"kind": "free"}
    raise BillingUnavailable("Paid runs are not available on this server yet.")


def refund_run_charge(*, charge: dict, reason: str) -> dict:
    """Give a run's charge back (platform fault or cancel before start); returns the new charge.

    A free run has nothing to give back; the billing issue adds credit and token refunds.
    """
    if charge.get("kind") in (None, "free"):
        return charge
    raise BillingUnavailable("Refunds of paid runs are not available on this server yet.")
