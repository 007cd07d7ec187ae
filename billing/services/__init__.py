"""Writes about money: paying for runs, Checkout, fulfilment, refunds and operator actions.

Rules:
- Credit is money: the balance is in cents. A run debits its price, a study the price of
  all its cases at once (STUDY_CASE_PRICE_CENTS each).
- A run or study is paid from credit first (if the balance covers it), else by a payment
  token bought for exactly that (one run; one study of that many cases), else the caller
  gets a 402 with ONE Stripe Checkout link for the whole amount. Charging happens inside
  the run's or study's own transaction, so one that is not created is not charged.
- A study is given back in parts (cancelled or platform-failed cases), as credit, never
  more than it was charged in all.
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
    study_charges  the same for a study, given back in parts
    tokens       payment tokens spent (a run's; a study's of exactly its cases)
    checkout     the 402's Payment and Checkout Sessions (runs, studies, credit packs)
    fulfilment   verified webhooks and reconciliation: payments paid, expired, refunded
    operators    the admin's grants, revocations, token voids and refunds in Stripe
    errors       PaymentRequired (402); conflicts are core.errors.Conflict (409)
"""

from billing.services.checkout import (
    CHECKOUT_MINIMUM_CENTS,
    OPEN_PAYMENT_MIN_REMAINING,
    credit_pack_checkout_start,
    run_payment_open_or_create,
    run_payment_request,
    study_payment_open_or_create,
    study_payment_request,
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
from billing.services.study_charges import (
    study_charge_give_back,
    study_charge_link,
    study_charge_take,
    study_price_cents,
)

__all__ = [
    "CHECKOUT_MINIMUM_CENTS",
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
    "study_charge_give_back",
    "study_charge_link",
    "study_charge_take",
    "study_payment_open_or_create",
    "study_payment_request",
    "study_price_cents",
]
