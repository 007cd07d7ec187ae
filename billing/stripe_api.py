"""The Stripe API calls billing makes, in one place, as plain dicts.

The SDK's api_key and api_base are configured in BillingConfig.ready() (and again
whenever a test overrides the STRIPE_* settings), so STRIPE_API_BASE can point every
call, ours and dj-stripe's, at another server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import stripe
from django.conf import settings

from core.errors import ServiceUnavailable
from core.problems import ProblemCode


class StripeUnavailable(ServiceUnavailable):
    """Stripe failed or could not be reached. Its own class because the webhook set-up
    command catches it apart from other failures."""

    code = ProblemCode.PAYMENT_PROVIDER_UNAVAILABLE


def configure_sdk() -> None:
    """Point the stripe SDK at settings.STRIPE_API_BASE with settings.STRIPE_SECRET_KEY."""
    stripe.api_key = settings.STRIPE_SECRET_KEY or None
    stripe.api_base = settings.STRIPE_API_BASE


def _plain(stripe_object: stripe.StripeObject) -> dict[str, Any]:
    return stripe_object.to_dict()


def _call(
    function: Callable[..., stripe.StripeObject], *args: object, **kwargs: object
) -> dict[str, Any]:
    try:
        return _plain(function(*args, api_key=settings.STRIPE_SECRET_KEY, **kwargs))
    except stripe.StripeError as error:
        raise StripeUnavailable(
            "The payment provider could not be reached; please retry in a moment."
        ) from error


def checkout_session_create(
    *,
    client_reference_id: str,
    product_name: str,
    amount_cents: int,
    currency: str,
    expires_at: datetime,
    quantity: int = 1,
    success_url: str,
    cancel_url: str,
    customer_email: str,
    metadata: dict[str, str],
) -> dict[str, Any]:
    """A one-off Checkout Session (mode payment) for one line item: `quantity` x
    `amount_cents` (a study: its cases at the price of one, so the customer sees both).

    Stripe's idempotency key is our Payment id, so a retried create returns the same session.
    """
    return _call(
        stripe.checkout.Session.create,
        mode="payment",
        client_reference_id=client_reference_id,
        line_items=[
            {
                "quantity": quantity,
                "price_data": {
                    "currency": currency,
                    "unit_amount": amount_cents,
                    "product_data": {"name": product_name},
                },
            }
        ],
        expires_at=int(expires_at.timestamp()),
        success_url=success_url,
        cancel_url=cancel_url,
        customer_email=customer_email,
        metadata=metadata,
        payment_intent_data={"metadata": metadata},
        idempotency_key=f"fmugateway-checkout-{client_reference_id}",
    )


def checkout_session_retrieve(session_id: str) -> dict[str, Any]:
    return _call(stripe.checkout.Session.retrieve, session_id)


def checkout_sessions_created_since(since: datetime) -> Iterator[dict[str, Any]]:
    """Every Checkout Session of the account created at or after `since`, newest first."""
    try:
        listing = stripe.checkout.Session.list(
            created={"gte": int(since.timestamp())},
            limit=100,
            api_key=settings.STRIPE_SECRET_KEY,
        )
        for session in listing.auto_paging_iter():
            yield _plain(session)
    except stripe.StripeError as error:
        raise StripeUnavailable("The payment provider could not be reached.") from error


def charge_retrieve(charge_id: str) -> dict[str, Any]:
    return _call(stripe.Charge.retrieve, charge_id)


def refund_create(
    *, payment_intent_id: str, reason: str = "requested_by_customer"
) -> dict[str, Any]:
    """Give the money back in Stripe; our records follow when charge.refunded arrives."""
    return _call(
        stripe.Refund.create,
        payment_intent=payment_intent_id,
        reason=reason,
        idempotency_key=f"fmugateway-refund-{payment_intent_id}",
    )
