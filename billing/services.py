"""Writes about money: paying for runs, Checkout, fulfilment, refunds and operator actions.

Rules (DESIGN.md section 4):
- A run is paid from credit first, else by a payment token, else the caller gets a 402
  with a Stripe Checkout link. Charging happens inside the run's own transaction, so a
  run that is not created is not charged.
- The balance is the sum of the ledger; whoever reads it to take from it holds the
  account's row lock first, so concurrent runs can never take it below zero.
- A Payment becomes paid only from what Stripe says about its Checkout Session (a
  verified webhook, or reconciliation re-reading Stripe), idempotently, in one
  transaction; e-mails and other side effects run after commit.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from billing import selectors, stripe_api
from billing.models import (
    CreditPack,
    LedgerEntry,
    LedgerKind,
    Payment,
    PaymentPurpose,
    PaymentStatus,
)
from fmugateway.problems import DomainError

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "pt_"  # noqa: S105 (a prefix, not a secret)
# A 402 reuses the open Payment only while its Checkout Session has this long left,
# so nobody is sent to a checkout page that closes while they type their card number.
OPEN_PAYMENT_MIN_REMAINING = timedelta(minutes=5)
RECONCILE_WINDOW = timedelta(days=3)


class PaymentRequired(DomainError):
    status_code = 402
    code = "payment-required"


class BillingConflict(DomainError):
    status_code = 409
    code = "conflict"


# --- paying for a run (inside simulation_create's transaction) ------------------------------


def charge_for_run(*, user, payment_token: str | None = None) -> dict:
    """Pay for one new run inside the caller's transaction, or raise PaymentRequired.

    Returns the charge as stored on the run ({"kind": "free"|"credit"|"token", ...}).
    The PaymentRequired raised here is bare on purpose: the caller's transaction rolls
    back, and the Checkout Session for the 402 is made afterwards by run_payment_request().
    """
    if not settings.BILLING_ENABLED:
        return {"kind": "free"}
    _lock_account(user)
    if selectors.credit_balance(user=user) > 0:
        entry = LedgerEntry.objects.create(
            user=user, kind=LedgerKind.CHARGE, runs=-1, reason="run paid from credit"
        )
        return {"kind": "credit", "ledger_entry": entry.pk}
    if payment_token:
        return _consume_token(user=user, token=payment_token.strip())
    raise PaymentRequired(
        f"You have no credit: this run costs {_price_text()}.",
        payment_token_status="none",  # noqa: S106 (a state, not a secret)
    )


def _consume_token(*, user, token: str) -> dict:
    """One conditional UPDATE: of N concurrent requests with one token exactly one wins."""
    now = timezone.now()
    consumed = Payment.objects.filter(
        token=token,
        user=user,
        purpose=PaymentPurpose.RUN,
        status=PaymentStatus.PAID,
        token_used_at__isnull=True,
        token_voided_at__isnull=True,
        token_expires_at__gt=now,
    ).update(token_used_at=now)
    if consumed:
        payment_id = Payment.objects.filter(token=token).values_list("pk", flat=True).get()
        return {"kind": "token", "payment": str(payment_id)}
    state, detail = _token_refusal(user=user, token=token)
    raise PaymentRequired(detail, payment_token_status=state)


def _token_refusal(*, user, token: str) -> tuple[str, str]:
    # Another account's token is reported exactly like a made-up one: never reveal it exists.
    payment = Payment.objects.filter(token=token, user=user).first()
    state = payment.token_state if payment else "invalid"
    detail = {
        "used": "This payment token was already used: a token pays for exactly one run.",
        "expired": (
            "This payment token has expired: tokens are valid for "
            f"{settings.PAYMENT_TOKEN_TTL // 60} minutes after payment."
        ),
        "void": "This payment token was voided (its payment was refunded or cancelled).",
    }.get(state, "This payment token is not valid for this account.")
    return state, detail


def run_charge_link(*, charge: dict, simulation) -> None:
    """Record which run a charge paid for, in the run's own transaction."""
    if charge.get("kind") == "credit":
        LedgerEntry.objects.filter(pk=charge["ledger_entry"]).update(simulation=simulation)
    elif charge.get("kind") == "token":
        Payment.objects.filter(pk=charge["payment"]).update(simulation=simulation)


def refund_run_charge(*, charge: dict, reason: str, operator=None) -> dict:
    """Give a run's charge back (platform fault or cancel before start); returns the new charge.

    Both kinds come back as one credit (a ledger refund): a credit charge gets its credit
    back, and a token charge gets a fresh credit linked to its payment rather than the
    token re-opened, because a 30-minute token could lapse before the caller retries,
    while a credit keeps. Refunding twice is a no-op (and the ledger allows one refund
    per run). Every refund is logged at WARNING with its run and cause: money given back
    is something an operator must be able to trace.
    """
    kind = charge.get("kind")
    if kind not in ("credit", "token") or charge.get("refunded"):
        return charge
    if kind == "credit":
        charged = LedgerEntry.objects.get(pk=charge["ledger_entry"])
        user, payment, simulation_id = charged.user, None, charged.simulation_id
    else:
        payment = Payment.objects.get(pk=charge["payment"])
        user, simulation_id = payment.user, payment.simulation_id
    refund = LedgerEntry.objects.create(
        user=user,
        kind=LedgerKind.REFUND,
        runs=1,
        payment=payment,
        simulation_id=simulation_id,
        reason=reason[:255],
        created_by=operator,
    )
    logger.warning(
        "refunded run %s to %s (%s charge, ledger entry %s): %s",
        simulation_id,
        user.pk,
        kind,
        refund.pk,
        reason,
    )
    return {**charge, "refunded": True, "refund_ledger_entry": refund.pk, "refund_reason": reason}


# --- the 402 and Checkout -----------------------------------------------------------------------


def run_payment_request(*, user, refused: PaymentRequired) -> PaymentRequired:
    """The complete 402 for a refused run: reuses the account's open Payment or makes one.

    Called after the run's transaction has rolled back, so the Checkout Session and the
    Payment row survive the refusal.
    """
    payment = run_payment_open_or_create(user=user)
    return PaymentRequired(
        f"{refused.detail} Pay {_price_text()} at payment.checkout_url, then retry the same "
        "request with the header 'Payment-Token: <token>' (the token appears at "
        "payment.status_url once paid), or buy credits at credit_packs_url.",
        price=selectors.simulation_price(),
        payment={
            "id": str(payment.pk),
            "checkout_url": payment.checkout_url,
            "expires_at": payment.expires_at.isoformat().replace("+00:00", "Z"),
            "status_url": reverse("api-payment", args=[payment.pk]),
            "token_ttl_seconds": settings.PAYMENT_TOKEN_TTL,
        },
        credit_packs_url=reverse("billing:pricing"),
        **refused.extra,
    )


def run_payment_open_or_create(*, user) -> Payment:
    """The account's open pay-per-run Payment, or a new one with its Checkout Session.

    The account row lock makes concurrent 402s of one account share one Checkout Session.
    """
    with transaction.atomic():
        _lock_account(user)
        payment = selectors.open_run_payment(
            user=user, valid_until=timezone.now() + OPEN_PAYMENT_MIN_REMAINING
        )
        if payment is not None:
            return payment
        payment = Payment.objects.create(
            user=user,
            purpose=PaymentPurpose.RUN,
            runs=1,
            amount_cents=settings.SIMULATION_PRICE_CENTS,
            currency=settings.SIMULATION_PRICE_CURRENCY,
            expires_at=timezone.now() + timedelta(seconds=settings.CHECKOUT_SESSION_TTL),
        )
        _attach_checkout_session(payment, product_name="FMU Gateway: one simulation run")
    return payment


def credit_pack_checkout_start(*, user, credit_pack: CreditPack) -> Payment:
    """A Payment for a credit pack with its Checkout Session (reusing an open one)."""
    if not settings.BILLING_ENABLED:
        raise BillingConflict("Billing is off on this server: runs are free.")
    if not credit_pack.active:
        raise BillingConflict("This credit pack is no longer on sale.")
    with transaction.atomic():
        _lock_account(user)
        payment = (
            Payment.objects.filter(
                user=user,
                purpose=PaymentPurpose.CREDIT_PACK,
                credit_pack=credit_pack,
                status=PaymentStatus.PENDING,
                amount_cents=credit_pack.price_cents,
                runs=credit_pack.runs,
                expires_at__gt=timezone.now() + OPEN_PAYMENT_MIN_REMAINING,
            )
            .exclude(checkout_url="")
            .first()
        )
        if payment is not None:
            return payment
        payment = Payment.objects.create(
            user=user,
            purpose=PaymentPurpose.CREDIT_PACK,
            credit_pack=credit_pack,
            runs=credit_pack.runs,
            amount_cents=credit_pack.price_cents,
            currency=credit_pack.currency,
            expires_at=timezone.now() + timedelta(seconds=settings.CHECKOUT_SESSION_TTL),
        )
        _attach_checkout_session(
            payment, product_name=f"FMU Gateway: {credit_pack.name} ({credit_pack.runs} runs)"
        )
    return payment


def _attach_checkout_session(payment: Payment, *, product_name: str) -> None:
    page = settings.SITE_URL.rstrip("/") + reverse("billing:payment", args=[payment.pk])
    session = stripe_api.checkout_session_create(
        client_reference_id=str(payment.pk),
        product_name=product_name,
        amount_cents=payment.amount_cents,
        currency=payment.currency,
        expires_at=payment.expires_at,
        # Stripe fills in {CHECKOUT_SESSION_ID}; the page uses it to show the token to
        # the browser that paid, even when it is not logged in to the portal.
        success_url=f"{page}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{page}?checkout=cancelled",
        customer_email=payment.user.email,
        metadata={
            "payment_id": str(payment.pk),
            "purpose": payment.purpose,
            "user_id": str(payment.user_id),
        },
    )
    payment.stripe_checkout_session_id = session["id"]
    payment.checkout_url = session["url"]
    payment.expires_at = datetime.fromtimestamp(session["expires_at"], tz=UTC)
    payment.save(update_fields=["stripe_checkout_session_id", "checkout_url", "expires_at"])


# --- fulfilment (verified webhooks and reconciliation) -----------------------------------------


def payment_sync_from_checkout(
    *, session_id: str, source: str, async_failed: bool = False
) -> Payment | None:
    """Bring our Payment in line with its Checkout Session as Stripe reports it now.

    The event only says which session to look at: its state is re-read from Stripe, so
    duplicated, late or out-of-order events all end in the same place. Idempotent.
    """
    session = stripe_api.checkout_session_retrieve(session_id)
    return _apply_checkout_session(session, source=source, async_failed=async_failed)


def _apply_checkout_session(session: dict, *, source: str, async_failed: bool = False):
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
            _fulfil(payment, payment_intent_id=_stripe_id(session.get("payment_intent")), by=source)
        elif session.get("status") == "expired" and payment.status == PaymentStatus.PENDING:
            payment.status = PaymentStatus.EXPIRED
            payment.save(update_fields=["status", "updated_at"])
        elif async_failed and payment.status == PaymentStatus.PENDING:
            payment.status = PaymentStatus.FAILED
            payment.save(update_fields=["status", "updated_at"])
    return payment


def _fulfil(payment: Payment, *, payment_intent_id: str, by: str) -> None:
    now = timezone.now()
    payment.status = PaymentStatus.PAID
    payment.paid_at = now
    payment.stripe_payment_intent_id = payment_intent_id
    payment.fulfilled_by_event = by[:255]
    if payment.purpose == PaymentPurpose.RUN:
        payment.token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        payment.token_expires_at = now + timedelta(seconds=settings.PAYMENT_TOKEN_TTL)
    else:
        LedgerEntry.objects.create(
            user=payment.user,
            kind=LedgerKind.PURCHASE,
            runs=payment.runs,
            payment=payment,
            reason=f"bought {payment.credit_pack.name if payment.credit_pack else 'credits'}",
        )
    payment.save()
    payment_id = payment.pk
    transaction.on_commit(lambda: _send_payment_receipt(payment_id))


def _send_payment_receipt(payment_id) -> None:
    payment = Payment.objects.select_related("user").get(pk=payment_id)
    page = settings.SITE_URL.rstrip("/") + reverse("billing:payment", args=[payment.pk])
    if payment.purpose == PaymentPurpose.RUN:
        what = (
            "one simulation run. Your payment token (valid for "
            f"{settings.PAYMENT_TOKEN_TTL // 60} minutes) is on {page}"
        )
    else:
        what = f"{payment.runs} runs of credit, now in your balance. Details: {page}"
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
    token is voided, and credits it gave are taken back up to the current balance (a
    run already delivered stays delivered). A partial refund is recorded and left to an
    operator. Idempotent.
    """
    charge = stripe_api.charge_retrieve(charge_id)
    payment_intent_id = _stripe_id(charge.get("payment_intent"))
    payment_id = (charge.get("metadata") or {}).get("payment_id")
    match = None
    if payment_intent_id:
        match = Payment.objects.filter(stripe_payment_intent_id=payment_intent_id)
    if (match is None or not match.exists()) and payment_id and selectors.is_uuid(payment_id):
        match = Payment.objects.filter(pk=payment_id)
    found = match.values_list("pk", "user_id").first() if match is not None else None
    if found is None:
        logger.info("Charge %s is not one of our payments; ignored", charge_id)
        return None
    with transaction.atomic():
        # The account before the payment: the order charge_for_run takes them in.
        _lock_account_id(found[1])
        payment = Payment.objects.select_for_update().get(pk=found[0])
        payment.refunded_cents = max(payment.refunded_cents, int(charge.get("amount_refunded", 0)))
        if not charge.get("refunded"):
            _note(payment, f"partial refund of {payment.refunded_cents} cents ({source})")
            payment.save()
            logger.warning("Partial refund on payment %s recorded; credits unchanged", payment.pk)
            return payment
        if payment.status == PaymentStatus.REFUNDED:
            payment.save()
            return payment
        _undo_payment(payment, reason=f"Stripe refund of charge {charge_id}", operator=None)
        _note(payment, f"refunded in Stripe ({source})")
        payment.save()
    return payment


def _undo_payment(payment: Payment, *, reason: str, operator) -> None:
    """Mark a payment refunded: void its unused token, take back its unspent credits."""
    _lock_account(payment.user)
    now = timezone.now()
    if payment.token and payment.token_used_at is None and payment.token_voided_at is None:
        payment.token_voided_at = now
    unspent = selectors.credits_given_by_payment(payment=payment)
    taken = min(unspent, selectors.credit_balance(user=payment.user))
    if taken > 0:
        LedgerEntry.objects.create(
            user=payment.user,
            kind=LedgerKind.REVOCATION,
            runs=-taken,
            payment=payment,
            reason=reason[:255],
            created_by=operator,
        )
    payment.status = PaymentStatus.REFUNDED
    payment.refunded_at = now


def payments_reconcile(*, window: timedelta = RECONCILE_WINDOW) -> Counter:
    """Catch up with Stripe for missed webhooks: fulfil paid sessions, expire expired ones.

    Looks at every Checkout Session created in the window, and at any pending Payment
    whose session should have expired by now. Returns how many payments changed to
    each status. Idempotent: a second run changes nothing.
    """
    changed: Counter = Counter()
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
        _reconcile_one(stripe_api.checkout_session_retrieve(session_id), changed)
    return changed


def _reconcile_one(session: dict, changed: Counter) -> None:
    before = (
        Payment.objects.filter(stripe_checkout_session_id=session["id"])
        .values_list("status", flat=True)
        .first()
    )
    payment = _apply_checkout_session(session, source="reconcile_payments")
    if payment is not None and payment.status != before:
        changed[payment.status] += 1


# --- operators (admin) ---------------------------------------------------------------------


def credits_grant(*, user, runs: int, reason: str, operator) -> LedgerEntry:
    """An operator gives an account credits; the reason is kept on the ledger."""
    if runs <= 0:
        raise BillingConflict("Grant a positive number of runs.")
    if not reason.strip():
        raise BillingConflict("Say why the credits are granted.")
    return LedgerEntry.objects.create(
        user=user, kind=LedgerKind.GRANT, runs=runs, reason=reason.strip(), created_by=operator
    )


def credits_revoke(*, user, runs: int, reason: str, operator) -> LedgerEntry:
    """An operator takes credits back; never more than the account holds."""
    if runs <= 0:
        raise BillingConflict("Revoke a positive number of runs.")
    if not reason.strip():
        raise BillingConflict("Say why the credits are revoked.")
    with transaction.atomic():
        _lock_account(user)
        balance = selectors.credit_balance(user=user)
        if runs > balance:
            raise BillingConflict(f"The account holds {balance} credits; cannot revoke {runs}.")
        return LedgerEntry.objects.create(
            user=user,
            kind=LedgerKind.REVOCATION,
            runs=-runs,
            reason=reason.strip(),
            created_by=operator,
        )


def run_charge_refund(*, simulation, reason: str, operator):
    """An operator gives a finished run's charge back (e.g. a model failure that was ours)."""
    from simulations.models import Simulation

    with transaction.atomic():
        locked = Simulation.objects.select_for_update().get(pk=simulation.pk)
        if locked.charge.get("kind") not in ("credit", "token"):
            raise BillingConflict("This run was free: there is nothing to refund.")
        if locked.charge.get("refunded"):
            raise BillingConflict("This run's charge has already been given back.")
        if not locked.is_finished:
            raise BillingConflict("Only a finished run can be refunded; cancel it instead.")
        locked.charge = refund_run_charge(
            charge=locked.charge, reason=f"operator: {reason}", operator=operator
        )
        locked.save(update_fields=["charge"])
    return locked


def payment_token_void(*, payment: Payment, reason: str, operator) -> Payment:
    """An operator voids an unused payment token (e.g. a customer reports it leaked)."""
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        state = locked.token_state
        if state != "unused":
            raise BillingConflict(f"The token is {state}: only an unused one can be voided.")
        locked.token_voided_at = timezone.now()
        _note(locked, f"token voided by {operator}: {reason}")
        locked.save()
    return locked


def payment_refund_in_stripe(*, payment: Payment, operator) -> dict:
    """An operator refunds a paid payment's money in Stripe.

    Our records change when Stripe's charge.refunded webhook arrives, so a refund made in
    the Stripe dashboard and one made here follow the same path.
    """
    if payment.status != PaymentStatus.PAID or not payment.stripe_payment_intent_id:
        raise BillingConflict("Only a paid payment can be refunded.")
    refund = stripe_api.refund_create(payment_intent_id=payment.stripe_payment_intent_id)
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        _note(locked, f"refund {refund['id']} requested in Stripe by {operator}")
        locked.save(update_fields=["notes", "updated_at"])
    return refund


# --- helpers -------------------------------------------------------------------------------


def _lock_account(user) -> None:
    """Serialise balance changes of one account: the row lock is held to the end of the
    transaction, so read-balance-then-charge can never interleave."""
    _lock_account_id(user.pk)


def _lock_account_id(user_id) -> None:
    get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk").get()


def _price_text() -> str:
    price = selectors.simulation_price()
    symbol = "$" if price["currency"] == "usd" else ""
    suffix = "" if symbol else f" {price['currency'].upper()}"
    return f"{symbol}{price['amount']}{suffix}"


def _stripe_id(value) -> str:
    if isinstance(value, dict):
        return value.get("id") or ""
    return value or ""


def _note(payment: Payment, text: str) -> None:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    payment.notes = f"{payment.notes}\n{stamp} {text}".strip()
