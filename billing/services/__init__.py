"""Writes about money: paying for runs, Checkout, fulfilment, refunds and operator actions.

Rules:
- A run is paid from credit first, else by a payment token, else the caller gets a 402
  with a Stripe Checkout link. Charging happens inside the run's own transaction, so a
  run that is not created is not charged.
- The balance is the sum of the ledger; whoever reads it to take from it holds the
  account's row lock first (billing.locks), so concurrent runs can never take it below
  zero.
- A Payment becomes paid only from what Stripe says about its Checkout Session (a
  verified webhook, or reconciliation re-reading Stripe), idempotently, in one
  transaction; e-mails and other side effects run after commit.
- Billing never imports simulations: a run's charge crosses as a billing.charges.Charge,
  and whatever must lock or save a run (an operator's refund) is simulations' service.

Modules (callers import the names below from `billing.services`):
    run_charges  paying for a run in its transaction, linking it, giving it back
    checkout     the 402's Payment and Checkout Sessions (runs, credit packs)
    fulfilment   verified webhooks and reconciliation: payments paid, expired, refunded
    operators    the admin's grants, revocations, token voids and refunds in Stripe
    errors       PaymentRequired (402); conflicts are core.errors.Conflict (409)
"""

from billing.services.checkout import (
    OPEN_PAYMENT_MIN_REMAINING,
    credit_pack_checkout_start,
    run_payment_open_or_create,
    run_payment_request,
)
from billing.services.errors import PaymentRequired
from billing.services.fulfilment import (
    RECONCILE_WINDOW,
    TOKEN_PREFIX,
    payment_refund_from_charge,
    payment_sync_from_checkout,
    payments_reconcile,
)
from billing.services.operators import (
    credits_grant,
    credits_revoke,
    payment_refund_in_stripe,
    payment_token_void,
)
from billing.services.run_charges import (
    run_charge_give_back,
    run_charge_link,
    run_charge_take,
)

__all__ = [
    "OPEN_PAYMENT_MIN_REMAINING",
    "RECONCILE_WINDOW",
    "TOKEN_PREFIX",
    "PaymentRequired",
    "credit_pack_checkout_start",
    "credits_grant",
    "credits_revoke",
    "payment_refund_from_charge",
    "payment_refund_in_stripe",
    "payment_sync_from_checkout",
    "payment_token_void",
    "payments_reconcile",
    "run_charge_give_back",
    "run_charge_link",
    "run_charge_take",
    "run_payment_open_or_create",
    "run_payment_request",
]
