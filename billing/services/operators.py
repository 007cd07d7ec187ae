"""What operators do to money in the admin: grant and revoke credit, void tokens, refund.

Every change leaves a ledger row (with its operator and reason) or a payment note.
Giving back a run's charge acts on the run too, so it is simulations' service
(simulations.services.simulation_refund), which calls run_charge_give_back.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing import selectors, stripe_api
from billing.locks import lock_account, lock_payment
from billing.models import LedgerEntry, LedgerKind, Payment, PaymentStatus, money_text
from billing.services.common import payment_note
from core.errors import Conflict


def credits_grant(*, user: User, cents: int, reason: str, operator: User) -> LedgerEntry:
    """An operator gives an account credit (money, in cents); the reason is kept on the
    ledger."""
    if cents <= 0:
        raise Conflict("Grant a positive amount.")
    if not reason.strip():
        raise Conflict("Say why the credit is granted.")
    return LedgerEntry.objects.create(
        user=user,
        kind=LedgerKind.GRANT,
        amount_cents=cents,
        reason=reason.strip(),
        created_by=operator,
    )


def credits_revoke(*, user: User, cents: int, reason: str, operator: User) -> LedgerEntry:
    """An operator takes credit (cents) back; never more than the account holds."""
    if cents <= 0:
        raise Conflict("Revoke a positive amount.")
    if not reason.strip():
        raise Conflict("Say why the credit is revoked.")
    with transaction.atomic():
        lock_account(user)
        balance = selectors.credit_balance(user=user)
        if cents > balance:
            raise Conflict(
                f"The account holds {money_text(balance)}; cannot revoke {money_text(cents)}."
            )
        return LedgerEntry.objects.create(
            user=user,
            kind=LedgerKind.REVOCATION,
            amount_cents=-cents,
            reason=reason.strip(),
            created_by=operator,
        )


def payment_token_void(*, payment: Payment, reason: str, operator: User) -> Payment:
    """An operator voids an unused payment token (e.g. a customer reports it leaked)."""
    with transaction.atomic():
        locked = lock_payment(payment.pk)
        state = locked.token_state
        if state != "unused":
            raise Conflict(f"The token is {state}: only an unused one can be voided.")
        locked.token_voided_at = timezone.now()
        payment_note(locked, f"token voided by {operator}: {reason}")
        locked.save()
    return locked


def payment_refund_in_stripe(*, payment: Payment, operator: User) -> dict[str, Any]:
    """An operator refunds a paid payment's money in Stripe.

    Our records change when Stripe's charge.refunded webhook arrives, so a refund made in
    the Stripe dashboard and one made here follow the same path.
    """
    if payment.status != PaymentStatus.PAID or not payment.stripe_payment_intent_id:
        raise Conflict("Only a paid payment can be refunded.")
    refund = stripe_api.refund_create(payment_intent_id=payment.stripe_payment_intent_id)
    with transaction.atomic():
        locked = lock_payment(payment.pk)
        payment_note(locked, f"refund {refund['id']} requested in Stripe by {operator}")
        locked.save(update_fields=["notes", "updated_at"])
    return refund
