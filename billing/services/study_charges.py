"""Paying for a study (many cases of one model, priced per case), and giving parts back.

A study is paid once, for all its cases, inside the transaction that creates it (as a
run is: billing.services.run_charges): from credit, as ONE ledger debit of cases x
STUDY_CASE_PRICE_CENTS, else with the token of a paid study Payment for exactly that
many cases, else refused (PaymentRequired; the 402's single Checkout Session for the
total is made afterwards by study_payment_request, in billing.services.checkout).

A study ends case by case, so it is given back in parts: the cents of the cases that
were cancelled or failed through our fault, each time as a ledger REFUND, never more
than the charge in all. Billing never imports simulations: the study crosses as a
django Model (linked like a run) and its charge as a billing.charges.Charge.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from django.conf import settings
from django.db import models
from django.db.models import Sum

from accounts.models import User
from billing import selectors
from billing.charges import Charge, ChargeKind
from billing.locks import lock_account_id
from billing.models import LedgerEntry, LedgerKind, Payment, money_text
from billing.services.common import study_price_cents
from billing.services.errors import PaymentRequired
from billing.services.tokens import credit_text, payment_token_consume

logger = logging.getLogger(__name__)

__all__ = [
    "study_charge_give_back",
    "study_charge_link",
    "study_charge_take",
    "study_price_cents",
]


def study_charge_take(*, user: User, cases: int, payment_token: str | None = None) -> Charge:
    """Pay for a new study of `cases` cases inside the caller's transaction, or raise a
    bare PaymentRequired (the caller rolls back, then asks study_payment_request for the
    402 with its Checkout link, as for a run).

    Credit first, and only if it covers the whole study: a study is never paid half from
    credit and half by card, so a token always pays for the whole study it was quoted for.
    """
    if cases <= 0:
        raise ValueError("A study has at least one case.")
    if not settings.BILLING_ENABLED:
        return Charge(kind=ChargeKind.FREE, cases=cases)
    total = study_price_cents(cases=cases)
    lock_account_id(user.pk)
    balance = selectors.credit_balance(user=user)
    if balance >= total:
        entry = LedgerEntry.objects.create(
            user=user,
            kind=LedgerKind.CHARGE,
            amount_cents=-total,
            reason=f"study of {cases} cases paid from credit",
        )
        return Charge(
            kind=ChargeKind.CREDIT, ledger_entry=entry.pk, amount_cents=total, cases=cases
        )
    if payment_token:
        payment = payment_token_consume(user=user, token=payment_token.strip(), cases=cases)
        return Charge(
            kind=ChargeKind.TOKEN,
            payment=str(payment.pk),
            amount_cents=payment.amount_cents,
            cases=cases,
        )
    raise PaymentRequired(
        f"{credit_text(balance)}: this study of {cases} cases costs {money_text(total)}.",
        payment_token_status="none",  # noqa: S106 (a state, not a secret)
    )


def study_charge_link(*, charge: Charge, study: models.Model) -> None:
    """Record which study a charge paid for, in the study's own transaction (`study`: a
    simulations.Study, which billing does not import)."""
    if charge.kind == ChargeKind.CREDIT and charge.ledger_entry is not None:
        LedgerEntry.objects.filter(pk=charge.ledger_entry).update(study=study)
    elif charge.kind == ChargeKind.TOKEN and charge.payment is not None:
        Payment.objects.filter(pk=charge.payment).update(study=study)


def study_charge_give_back(*, charge: Charge, cents: int, reason: str) -> Charge:
    """Give `cents` of a study's charge back as credit (cases cancelled, or failed through
    our fault); returns the charge for the caller to store on the study.

    May be called once per batch of cases; what is given back in all never exceeds what
    was charged (a call asking for more gives back what is left, and one with nothing
    left is a no-op). A free charge is a no-op. A token-paid study is given back as
    account credit too, linked to its payment (as a token-paid run is): a partial refund
    of a card payment would cost a Stripe fee each time, and credit keeps.

    The total given back so far is read from the ledger under the account's lock, not
    only from the charge passed in, so two callers holding the same stale charge cannot
    give back the same cents twice.
    """
    if cents < 0:
        raise ValueError("Give back a positive number of cents.")
    if not charge.is_study:
        raise ValueError("Not a study's charge: runs are given back by run_charge_give_back.")
    if not charge.is_refundable or cents == 0:
        return charge
    payment: Payment | None = None
    if charge.kind == ChargeKind.CREDIT:
        if charge.ledger_entry is None:  # names no row: as the lookup of None would say
            raise LedgerEntry.DoesNotExist("This credit charge has no ledger entry.")
        charged = LedgerEntry.objects.get(pk=charge.ledger_entry)
        user_id, study_id, total = charged.user_id, charged.study_id, -charged.amount_cents
    else:
        if charge.payment is None:  # names no row: as the lookup of None would say
            raise Payment.DoesNotExist("This token charge has no payment.")
        payment = Payment.objects.get(pk=charge.payment)
        user_id, study_id, total = payment.user_id, payment.study_id, payment.amount_cents
    lock_account_id(user_id)
    given = max(_given_back_cents(study_id=study_id), charge.refunded_cents or 0)
    cents = min(cents, total - given)
    if cents <= 0:
        return charge
    refund = LedgerEntry.objects.create(
        user_id=user_id,
        kind=LedgerKind.REFUND,
        amount_cents=cents,
        payment=payment,
        study_id=study_id,
        reason=reason[:255],
    )
    logger.warning(
        "refunded %s cents of study %s to %s (%s charge, ledger entry %s): %s",
        cents,
        study_id,
        user_id,
        charge.kind,
        refund.pk,
        reason,
    )
    # From what the ledger says was given back: the charge passed in may be a stale copy.
    return replace(charge, refunded_cents=given).partly_given_back(
        cents=cents, refund_ledger_entry=refund.pk, reason=reason
    )


def _given_back_cents(*, study_id: uuid.UUID | None) -> int:
    if study_id is None:  # not linked yet: only the charge itself can say
        return 0
    total = LedgerEntry.objects.filter(study_id=study_id, kind=LedgerKind.REFUND).aggregate(
        total=Sum("amount_cents")
    )["total"]
    return int(total or 0)
