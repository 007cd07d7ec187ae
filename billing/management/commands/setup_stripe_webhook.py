"""Record the Stripe webhook endpoint that dj-stripe verifies events with; print its URL last.

With Stripe reachable, the endpoint is created in Stripe (through dj-stripe) for the
events billing handles, and Stripe's signing secret is kept. With `--secret whsec_...
--local`, only a local endpoint with that secret is recorded: for tests, local demos
and `stripe listen --forward-to <printed URL>`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse
from djstripe.enums import WebhookEndpointStatus
from djstripe.models import WebhookEndpoint
from djstripe.settings import djstripe_settings

from billing.stripe_api import StripeUnavailable

HANDLED_EVENTS = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--secret", help="The signing secret (whsec_...) for --local.")
        parser.add_argument(
            "--local",
            action="store_true",
            help="Record a local endpoint with --secret; do not call Stripe.",
        )
        parser.add_argument(
            "--base-url",
            default=settings.SITE_URL,
            help=f"Public base URL of this server (default {settings.SITE_URL}).",
        )

    def handle(self, *args: str, **options: Any) -> None:
        base_url = options["base_url"].rstrip("/")
        if options["local"]:
            endpoint = self._local_endpoint(options["secret"], base_url)
        else:
            if options["secret"]:
                raise CommandError("--secret is only for --local: Stripe makes the secret.")
            endpoint = self._stripe_endpoint(base_url)
        self.stdout.write(endpoint.url)

    def _local_endpoint(self, secret: str | None, base_url: str) -> WebhookEndpoint:
        if not secret or not secret.startswith("whsec_"):
            raise CommandError("--local needs --secret whsec_... (the signing secret to verify).")
        existing = WebhookEndpoint.objects.filter(secret=secret, id__startswith="local_").first()
        if existing is not None:
            self.stderr.write("A local endpoint with this secret exists already.")
            return existing
        endpoint_uuid = uuid.uuid4()
        return WebhookEndpoint.objects.create(
            id=f"local_{endpoint_uuid.hex}",
            api_version=djstripe_settings.STRIPE_API_VERSION,
            enabled_events=HANDLED_EVENTS,
            secret=secret,
            status=WebhookEndpointStatus.enabled,
            url=base_url + _webhook_path(endpoint_uuid),
            djstripe_uuid=endpoint_uuid,
            livemode=settings.STRIPE_LIVE_MODE,
        )

    def _stripe_endpoint(self, base_url: str) -> WebhookEndpoint:
        if not settings.BILLING_ENABLED:
            raise CommandError("Set STRIPE_SECRET_KEY to create the endpoint in Stripe.")
        import stripe

        endpoint_uuid = uuid.uuid4()
        try:
            created = WebhookEndpoint._api_create(
                url=base_url + _webhook_path(endpoint_uuid),
                api_version=djstripe_settings.STRIPE_API_VERSION,
                enabled_events=HANDLED_EVENTS,
                metadata={"djstripe_uuid": str(endpoint_uuid)},
                livemode=settings.STRIPE_LIVE_MODE,
                api_key=settings.STRIPE_SECRET_KEY,
            )
            # The secret is in the create response only; dj-stripe keeps it from there.
            endpoint = WebhookEndpoint.sync_from_stripe_data(
                created, api_key=settings.STRIPE_SECRET_KEY
            )
        except (stripe.StripeError, StripeUnavailable) as error:
            raise CommandError(f"Stripe refused or could not be reached: {error}") from error
        if not endpoint.secret:
            raise CommandError("Stripe did not return the endpoint's signing secret.")
        return endpoint


def _webhook_path(endpoint_uuid: uuid.UUID) -> str:
    return reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint_uuid})
