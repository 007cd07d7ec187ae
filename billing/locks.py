"""Row locks of billing, in the one order every writer takes them: the account, then a payment.

The balance is the sum of the ledger, so no row holds it: whoever reads it to take from
it (a run's charge, a revocation, a Stripe refund) first locks the account's user row,
held to the end of the transaction, so read-balance-then-write never interleaves and
concurrent runs cannot take it below zero. A payment is locked after its account, never
before, so two writers cannot wait on each other.
"""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model

from accounts.models import User
from billing.models import Payment


def lock_account(user: User) -> None:
    """Serialise balance changes of one account, to the end of the current transaction."""
    lock_account_id(user.pk)


def lock_account_id(user_id: int) -> None:
    get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk").get()


def lock_payment(payment_id: uuid.UUID) -> Payment:
    """The payment, re-read and locked to the end of the current transaction."""
    return Payment.objects.select_for_update().get(pk=payment_id)
