"""The problems billing's services raise (each a DomainError: an HTTP status and a code)."""

from __future__ import annotations

from core.errors import DomainError


class PaymentRequired(DomainError):
    """A run that nothing paid for: no credit, and no (valid) payment token.

    Raised bare by run_charge_take inside the run's transaction; the complete 402, with
    its Checkout link, is made by run_payment_request once that transaction rolled back.
    """

    status_code = 402
    code = "payment-required"


class BillingConflict(DomainError):
    status_code = 409
    code = "conflict"
