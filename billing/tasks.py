"""Celery tasks: thin, idempotent; they import billing.services and call it (no billing
service enqueues a task).

Every task here goes to the billing queue (fmugateway/celery.py's task_routes), which
only fly.toml's `billing` process group consumes: the simulation workers, which run
customers' code, hold no Stripe key (their entrypoint leaves STRIPE_* out) and never
take it. The worker's beat still schedules these tasks; sending one needs no key.
"""

from celery import shared_task
from django.conf import settings

from billing import services

# A reconciliation waiting longer than the beat's period (900 s) is superseded by the
# next one: if the billing machine is down for a day, one catch-up runs, not 96.
RECONCILE_EXPIRES_SECONDS = 900


@shared_task(ignore_result=True, expires=RECONCILE_EXPIRES_SECONDS)
def reconcile_payments() -> dict[str, int]:
    """Catch up with Stripe after missed webhooks (see services.payments_reconcile)."""
    if not settings.BILLING_ENABLED:
        return {}
    return dict(services.payments_reconcile())
