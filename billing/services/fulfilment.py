"""Fulfilment: what Stripe says was paid or refunded becomes tokens, credits and revocations.

A Payment becomes paid only from what Stripe says about its Checkout Session (a verified
webhook, or reconciliation re-reading Stripe), idempotently, in one transaction; e-mails
and other side effects run after commit. Events only say what to look at: the state is
re-read from Stripe, so duplicated, late or out-of-order events all end in one place.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing import selectors, stripe_api
from billing.locks import lock_account, lock_account_id, lock_payment
from billing.models import LedgerEntry, LedgerKind, Payment, PaymentPurpose, PaymentStatus
from billing.services.common import payment_note

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "pt_"  # noqa: S105 (a prefix, not a secret)
RECONCILE_WINDOW = timedelta(days=3)


def payment_sync_from_checkout(
    *, session_id: str, source: str, async_failed: bool = False
) -> Payment | None:
    """Bring our Payment in line with its Checkout Session as Stripe reports it now.

    The event only says which session to look at: its state is re-read from Stripe, so
    duplicated, late or out-of-order events all end in the same place. Idempotent.
    """
    session = stripe_api.checkout_session_retrieve(session_id)
    return _checkout_session_apply(session, source=source, async_failed=async_failed)


def _checkout_session_apply(
    session: dict[str, Any], *, source: str, async_failed: bool = False
) -> Payment | None:
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("user", "credit_pack")
            .filter(stripe_checkout_session_id=session["id"])
            .first()
        )
        if payment is None:
            logger.info("Checkout Session %s is not one of our payments; ignored", session["id"])
            return None
        if session.get("client_reference_id") not in (None, str(payment.pk)):
            logger.error("Checkout Session %s names another payment; ignored", session["id"])
            return payment
        if session.get("status") == "complete" and session.get("payment_status") == "paid":
            if payment.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED):
                return payment  # fulfilled before: Stripe repeats itself, we do not
            if (session.get("amount_total"), session.get("currency")) != (
                payment.amount_cents,
                payment.currency,
            ):
                logger.error(
                    "Checkout Session %s paid %s %s, payment %s expects %s %s: not fulfilled",
                    session["id"],
                    session.get("amount_total"),
                    session.get("currency"),
                    payment.pk,
                    payment.amount_cents,
                    payment.currency,
                )
                return payment
            _payment_fulfil(
                payment, payment_intent_id=_stripe_id(session.get("payment_intent")), by=source
            )
        elif session.get("status") == "expired" and payment.status == PaymentStatus.PENDING:
            payment.status = PaymentStatus.EXPIRED
            payment.save(update_fields=["status", "updated_at"])
        elif async_failed and payment.status == PaymentStatus.PENDING:
            payment.status = PaymentStatus.FAILED
            payment.save(update_fields=["status", "updated_at"])
    return payment


def _payment_fulfil(payment: Payment, *, payment_intent_id: str, by: str) -> None:
    now = timezone.now()
    payment.status = PaymentStatus.PAID
    payment.paid_at = now
    payment.stripe_payment_intent_id = payment_intent_id
    payment.fulfilled_by_event = by[:255]
    if payment.pays_with_token:  # a run's or a study's 402: the retry pays with the token
        payment.token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        payment.token_expires_at = now + timedelta(seconds=settings.PAYMENT_TOKEN_TTL)
    else:
        LedgerEntry.objects.create(
            user=payment.user,
            kind=LedgerKind.PURCHASE,
            amount_cents=payment.credit_cents,
            payment=payment,
            reason=f"bought {payment.credit_pack.name if payment.credit_pack else 'credits'}",
        )
    payment.save()
    payment_id = payment.pk
    transaction.on_commit(lambda: _payment_receipt_send(payment_id))


def _payment_receipt_send(payment_id: uuid.UUID) -> None:
    payment = Payment.objects.select_related("user").get(pk=payment_id)
    page = settings.SITE_URL.rstrip("/") + reverse("billing:payment", args=[payment.pk])
    if payment.pays_with_token:
        bought = (
            "one simulation run"
            if payment.purpose == PaymentPurpose.RUN
            else f"one study of {payment.cases} cases"
        )
        what = (
            f"{bought}. Your payment token (valid for "
            f"{settings.PAYMENT_TOKEN_TTL // 60} minutes) is on {page}"
        )
    else:
        what = f"{payment.credit_text} of credit, now in your balance. Details: {page}"
    try:
        send_mail(
            subject="FMU Gateway: payment received",
            message=(
                f"We received {payment.amount} {payment.currency.upper()} for {what}\n\n"
                f"Payment {payment.pk}"
            ),
            from_email=None,
            recipient_list=[payment.user.email],
        )
    except Exception:  # a receipt that cannot be sent must not undo the payment
        logger.exception("receipt for payment %s could not be sent", payment_id)


def payment_refund_from_charge(*, charge_id: str, source: str) -> Payment | None:
    """Stripe refunded a charge: void the unused token or take back the unspent credits.

    A full refund undoes what the payment bought as far as it is unspent: an unused
    token is voided, and credit it gave (a pack's, or a token-paid run's or study's
    refunds) is taken back up to the current balance (a run already delivered stays
    delivered). A partial refund is recorded and left to an
    operator. Idempotent. (`charge_id` is a Stripe Charge, not a run's billing.charges.Charge.)
    """
    charge = stripe_api.charge_retrieve(charge_id)
    payment_intent_id = _stripe_id(charge.get("payment_intent"))
    payment_id = (charge.get("metadata") or {}).get("payment_id")
    match: QuerySet[Payment] | None = None
    if payment_intent_id:
        match = Payment.objects.filter(stripe_payment_intent_id=payment_intent_id)
    if (match is None or not match.exists()) and payment_id and selectors.is_uuid(payment_id):
        match = Payment.objects.filter(pk=payment_id)
    found = match.values_list("pk", "user_id").first() if match is not None else None
    if found is None:
        logger.info("Charge %s is not one of our payments; ignored", charge_id)
        return None
    with transaction.atomic():
        # The account before the payment: the order run_charge_take takes them in.
        lock_account_id(found[1])
        payment = lock_payment(found[0])
        payment.refunded_cents = max(payment.refunded_cents, int(charge.get("amount_refunded", 0)))
        if not charge.get("refunded"):
            payment_note(payment, f"partial refund of {payment.refunded_cents} cents ({source})")
            payment.save()
            logger.warning("Partial refund on payment %s recorded; credits unchanged", payment.pk)
            return payment
        if payment.status == PaymentStatus.REFUNDED:
            payment.save()
            return payment
        _payment_undo(payment, reason=f"Stripe refund of charge {charge_id}", operator=None)
        payment_note(payment, f"refunded in Stripe ({source})")
        payment.save()
    return payment


def _payment_undo(payment: Payment, *, reason: str, operator: User | None) -> None:
    """Mark a payment refunded: void its unused token, take back its unspent credits."""
    lock_account(payment.user)
    now = timezone.now()
    if payment.token and payment.token_used_at is None and payment.token_voided_at is None:
        payment.token_voided_at = now
    unspent = selectors.credits_given_by_payment(payment=payment)
    taken = min(unspent, selectors.credit_balance(user=payment.user))
    if taken > 0:
        LedgerEntry.objects.create(
            user=payment.user,
            kind=LedgerKind.REVOCATION,
            amount_cents=-taken,
            payment=payment,
            reason=reason[:255],
            created_by=operator,
        )
    payment.status = PaymentStatus.REFUNDED
    payment.refunded_at = now


def payments_reconcile(*, window: timedelta = RECONCILE_WINDOW) -> Counter[str]:
    """Catch up with Stripe for missed webhooks: fulfil paid sessions, expire expired ones.

    Looks at every Checkout Session created in the window, and at any pending Payment
    whose session should have expired by now. Returns how many payments changed to
    each status. Idempotent: a second run changes nothing.
    """
    changed: Counter[str] = Counter()
    seen: set[str] = set()
    ours = set(
        Payment.objects.filter(created_at__gte=timezone.now() - window)
        .exclude(stripe_checkout_session_id=None)
        .values_list("stripe_checkout_session_id", flat=True)
    )
    for session in stripe_api.checkout_sessions_created_since(timezone.now() - window):
        if session["id"] not in ours:
            continue
        seen.add(session["id"])
        _reconcile_one(session, changed)
    overdue = (
        Payment.objects.filter(status=PaymentStatus.PENDING, expires_at__lt=timezone.now())
        .exclude(stripe_checkout_session_id=None)
        .exclude(stripe_checkout_session_id__in=seen)
        .values_list("stripe_checkout_session_id", flat=True)
    )
    for session_id in list(overdue):
        assert session_id is not None  # excluded above; the column is nullable
        _reconcile_one(stripe_api.checkout_session_retrieve(session_id), changed)
    return changed


def _reconcile_one(session: dict[str, Any], changed: Counter[str]) -> None:
    before = (
        Payment.objects.filter(stripe_checkout_session_id=session["id"])
        .values_list("status", flat=True)
        .first()
    )
    payment = _checkout_session_apply(session, source="reconcile_payments")
    if payment is not None and payment.status != before:
        changed[payment.status] += 1


def _stripe_id(value: str | dict[str, Any] | None) -> str:
    """The id of an expandable Stripe field: the id itself, or the expanded object's."""
    if isinstance(value, dict):
        expanded_id: str | None = value.get("id")
        return expanded_id or ""
    return value or ""
