"""Stripe webhook handlers: dj-stripe has verified and stored the event; these call services.

dj-stripe runs them inside its own transaction, after it has recorded the Event (a
repeated event id never reaches them) and synced the object; a handler that raises
rolls that back and answers 500, so Stripe delivers the event again later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from djstripe import signals
from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Event, WebhookEventTrigger

from billing import services

# dj-stripe lets this header replace the endpoint's secret when DEBUG is on (for the
# Stripe CLI). A request must never choose the secret it is verified with.
SECRET_OVERRIDE_HEADER = "x-djstripe-webhook-secret"  # noqa: S105 (a header name)

_Handler = TypeVar("_Handler", bound=Callable[..., None])


def _receiver(event_types: str | list[str]) -> Callable[[_Handler], _Handler]:
    """dj-stripe's djstripe_receiver, typed (dj-stripe ships no types): it connects the
    handler to the signals of those event types and returns it unchanged."""
    connect: Callable[[_Handler], _Handler] = djstripe_receiver(event_types)
    return connect


@_receiver(
    [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.expired",
    ]
)
def checkout_session_changed(sender: object, event: Event, **kwargs: object) -> None:
    services.payment_sync_from_checkout(session_id=event.data["object"]["id"], source=event.id)


@_receiver("checkout.session.async_payment_failed")
def checkout_session_payment_failed(sender: object, event: Event, **kwargs: object) -> None:
    services.payment_sync_from_checkout(
        session_id=event.data["object"]["id"], source=event.id, async_failed=True
    )


@_receiver("charge.refunded")
def charge_refunded(sender: object, event: Event, **kwargs: object) -> None:
    services.payment_refund_from_charge(charge_id=event.data["object"]["id"], source=event.id)


def drop_secret_override(sender: object, instance: WebhookEventTrigger, **kwargs: object) -> None:
    instance.headers = {
        name: value
        for name, value in instance.headers.items()
        if name.lower() != SECRET_OVERRIDE_HEADER
    }


signals.webhook_pre_validate.connect(
    drop_secret_override, sender=WebhookEventTrigger, dispatch_uid="billing-drop-secret-override"
)
