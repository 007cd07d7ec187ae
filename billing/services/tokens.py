"""Payment tokens spent, and the start of a 402's sentence: what run_charges and
study_charges share (neither imports the other).

A paid run or study Payment holds one token, which pays for exactly what its Checkout
quoted (one run; one study of exactly `cases` cases), once, for PAYMENT_TOKEN_TTL.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from accounts.models import User
from billing.models import Payment, PaymentPurpose, PaymentStatus, money_text
from billing.services.errors import PaymentRequired


def credit_text(balance: int) -> str:
    """The start of a 402's detail: what the account holds."""
    if balance <= 0:
        return "You have no credit"
    return f"You have {money_text(balance)} of credit"


def payment_token_consume(*, user: User, token: str, cases: int | None) -> Payment:
    """One conditional UPDATE: of N concurrent requests with one token exactly one wins.

    `cases` None: the token must be a run's; else a study's of exactly that many cases
    (a token pays for what its Checkout quoted, nothing else).
    """
    now = timezone.now()
    wanted = (
        Payment.objects.filter(purpose=PaymentPurpose.RUN)
        if cases is None
        else Payment.objects.filter(purpose=PaymentPurpose.STUDY, cases=cases)
    )
    consumed = wanted.filter(
        token=token,
        user=user,
        status=PaymentStatus.PAID,
        token_used_at__isnull=True,
        token_voided_at__isnull=True,
        token_expires_at__gt=now,
    ).update(token_used_at=now)
    if consumed:
        return Payment.objects.get(token=token)
    state, detail = _payment_token_refusal(user=user, token=token, cases=cases)
    raise PaymentRequired(detail, payment_token_status=state)


def _payment_token_refusal(*, user: User, token: str, cases: int | None) -> tuple[str, str]:
    # Another account's token is reported exactly like a made-up one: never reveal it exists.
    payment = Payment.objects.filter(token=token, user=user).first()
    state = payment.token_state if payment else "invalid"
    what = "one run" if cases is None else f"one study of {cases} cases"
    if payment is not None and state == "unused":
        # Unused and valid, but bought for something else: a run's token for a study, a
        # study's for a run, or a study's for a study of another size.
        state = "mismatch"
        bought = "one run" if payment.cases is None else f"one study of {payment.cases} cases"
        return state, f"This payment token pays for {bought}, not for {what}."
    detail = {
        "used": "This payment token was already used: a token pays for exactly "
        f"what it was bought for, once ({what}).",
        "expired": (
            "This payment token has expired: tokens are valid for "
            f"{settings.PAYMENT_TOKEN_TTL // 60} minutes after payment."
        ),
        "void": "This payment token was voided (its payment was refunded or cancelled).",
    }.get(state, "This payment token is not valid for this account.")
    return state, detail
