"""What the client prints on stderr while it waits for a payment (stdout may be data)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from fmugateway_client.errors import PaymentRequired

# How long past a Checkout link's expiry the client still waits for the payment: a
# payment made at the last second is fulfilled by a webhook a little later.
PAYMENT_EXPIRY_GRACE_SECONDS = 60.0


def payment_wait_limit(expires_at: datetime | None) -> float:
    """Seconds from now until the Checkout link has expired, plus the grace."""
    if expires_at is None:
        return 3600.0
    left = (expires_at - datetime.now(UTC)).total_seconds()
    return max(left, 0.0) + PAYMENT_EXPIRY_GRACE_SECONDS


def attached_to_terminal() -> bool:
    """Whether a person is there to open a browser (stdin and stderr are a terminal)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def print_checkout_notice(required: PaymentRequired) -> None:
    """The default notice in "wait" mode: where to pay, on stderr (stdout may be data)."""
    price = f"a run costs {required.price}" if required.price else "this run must be paid"
    refused = {
        "used": " (the payment token was already used)",
        "expired": " (the payment token has expired)",
        "void": " (the payment token was voided)",
        "invalid": " (the payment token is not valid for this account)",
    }.get(required.payment_token_status or "", "")
    lines = [
        f"Payment required: no credit left and {price}{refused}.",
        f"Pay here: {required.checkout_url}",
    ]
    if required.expires_at:
        lines.append(f"The link is valid until {required.expires_at:%Y-%m-%d %H:%M} UTC.")
    lines.append("Waiting for the payment to arrive (Ctrl-C to stop waiting)...")
    print("\n".join(lines), file=sys.stderr, flush=True)


def print_study_checkout_notice(required: PaymentRequired) -> None:
    """The default notice when waiting for a study's payment: the case count, where to pay."""
    what = f"this study of {required.cases} cases" if required.cases else "this study"
    each = f" ({required.price} a case)" if required.price else ""
    price = f" costs {required.total}{each}" if required.total else " must be paid"
    lines = [
        f"Payment required: no credit left and {what}{price}.",
        f"Pay here: {required.checkout_url}",
    ]
    if required.expires_at:
        lines.append(f"The link is valid until {required.expires_at:%Y-%m-%d %H:%M} UTC.")
    lines.append("Waiting for the payment to arrive (Ctrl-C to stop waiting)...")
    print("\n".join(lines), file=sys.stderr, flush=True)
