"""Paying for a run, inside simulation_create's transaction, and giving it back.

A run is paid from credit first (when the balance holds its price, which is debited),
else by a payment token, else refused (PaymentRequired,
which becomes the 402 with a Checkout link: billing.services.checkout). The charge is
taken inside the run's own transaction, so a run that is not created is not charged.
The run's side (simulations) stores the returned Charge on the run and hands it back
here to be linked or given back: billing never imports simulations.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import models

from accounts.models import User
from billing import selectors
from billing.charges import Charge, ChargeKind
from billing.locks import lock_account
from billing.models import (
    LedgerEntry,
    LedgerKind,
    Payment,
)
from billing.services.common import price_text
from billing.services.errors import PaymentRequired
from billing.services.tokens import credit_text, payment_token_consume

logger = logging.getLogger(__name__)


def run_charge_take(*, user: User, payment_token: str | None = None) -> Charge:
    """Pay for one new run inside the caller's transaction, or raise PaymentRequired.

    The PaymentRequired raised here is bare on purpose: the caller's transaction rolls
    back, and the Checkout Session for the 402 is made afterwards by run_payment_request().
    """
    if not settings.BILLING_ENABLED:
        return Charge(kind=ChargeKind.FREE)
    lock_account(user)
    price = settings.SIMULATION_PRICE_CENTS
    balance = selectors.credit_balance(user=user)
    if balance >= price:
        entry = LedgerEntry.objects.create(
            user=user, kind=LedgerKind.CHARGE, amount_cents=-price, reason="run paid from credit"
        )
        return Charge(kind=ChargeKind.CREDIT, ledger_entry=entry.pk, amount_cents=price)
    if payment_token:
        payment = payment_token_consume(user=user, token=payment_token.strip(), cases=None)
        return Charge(
            kind=ChargeKind.TOKEN, payment=str(payment.pk), amount_cents=payment.amount_cents
        )
    raise PaymentRequired(
        f"{credit_text(balance)}: this run costs {price_text()}.",
        payment_token_status="none",  # noqa: S106 (a state, not a secret)
    )


def run_charge_link(*, charge: Charge, simulation: models.Model) -> None:
    """Record which run a charge paid for, in the run's own transaction (`simulation`: a
    simulations.Simulation, which billing does not import)."""
    # A paid charge without its ledger entry or payment names no row: nothing to update.
    if charge.kind == ChargeKind.CREDIT and charge.ledger_entry is not None:
        LedgerEntry.objects.filter(pk=charge.ledger_entry).update(simulation=simulation)
    elif charge.kind == ChargeKind.TOKEN and charge.payment is not None:
        Payment.objects.filter(pk=charge.payment).update(simulation=simulation)


def run_charge_give_back(*, charge: Charge, reason: str, operator: User | None = None) -> Charge:
    """Give a run's charge back (platform fault, cancel before start, an operator);
    returns the charge to store on the run.

    Both kinds come back as credit (a ledger refund of what the run took): a credit charge
    gets its money back, and a token charge gets fresh credit of what its payment was,
    linked to its payment, rather than the token re-opened, because a 30-minute token could
    lapse before the caller retries, while credit keeps. Giving back twice is a no-op
    (and the ledger allows one refund per run). Every refund is logged at WARNING with its
    run and cause: money given back is something an operator must be able to trace.
    """
    if not charge.is_refundable:
        return charge
    payment: Payment | None
    if charge.kind == ChargeKind.CREDIT:
        if charge.ledger_entry is None:  # names no row: as the lookup of None would say
            raise LedgerEntry.DoesNotExist("This credit charge has no ledger entry.")
        charged = LedgerEntry.objects.get(pk=charge.ledger_entry)
        user, payment, simulation_id = charged.user, None, charged.simulation_id
        cents = -charged.amount_cents
    else:
        if charge.payment is None:  # names no row: as the lookup of None would say
            raise Payment.DoesNotExist("This token charge has no payment.")
        payment = Payment.objects.get(pk=charge.payment)
        user, simulation_id = payment.user, payment.simulation_id
        cents = payment.amount_cents
    refund = LedgerEntry.objects.create(
        user=user,
        kind=LedgerKind.REFUND,
        amount_cents=cents,
        payment=payment,
        simulation_id=simulation_id,
        reason=reason[:255],
        created_by=operator,
    )
    logger.warning(
        "refunded run %s to %s (%s charge, %s cents, ledger entry %s): %s",
        simulation_id,
        user.pk,
        charge.kind,
        cents,
        refund.pk,
        reason,
    )
    return charge.given_back(refund_ledger_entry=refund.pk, reason=reason)
