"""Catch up with Stripe after missed webhooks: fulfil paid Checkout Sessions, expire expired ones.

Safe to run at any time and as often as wanted (e.g. every 15 minutes from cron).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import services


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=services.RECONCILE_WINDOW.days,
            help="Look at Checkout Sessions created in the last N days.",
        )

    def handle(self, *args: str, **options: Any) -> None:
        if not settings.BILLING_ENABLED:
            raise CommandError("Billing is off (no STRIPE_SECRET_KEY): nothing to reconcile.")
        changed = services.payments_reconcile(window=timedelta(days=options["days"]))
        self.stdout.write(
            f"paid: {changed.get('paid', 0)}, expired: {changed.get('expired', 0)}, "
            f"failed: {changed.get('failed', 0)}"
        )
