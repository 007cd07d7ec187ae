"""Celery tasks: thin, idempotent."""

from celery import shared_task
from django.conf import settings

from billing import services


@shared_task(ignore_result=True)
def reconcile_payments() -> dict[str, int]:
    """Catch up with Stripe after missed webhooks (see services.payments_reconcile)."""
    if not settings.BILLING_ENABLED:
        return {}
    return dict(services.payments_reconcile())
