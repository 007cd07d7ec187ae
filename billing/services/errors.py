"""The one DomainError of billing's services with data of its own; their conflicts are
core.errors.Conflict."""

from __future__ import annotations

from core.errors import DomainError
from core.problems import ProblemCode


class PaymentRequired(DomainError):
    """A run that nothing paid for: no credit, and no (valid) payment token.

    Raised bare by run_charge_take inside the run's transaction; the complete 402, with
    its Checkout link, is made by run_payment_request once that transaction rolled back.
    A class of its own for the payment data it carries (price, payment link, why a token
    did not pay), which the API's 402 and the portal's run page show.
    """

    code = ProblemCode.PAYMENT_REQUIRED
