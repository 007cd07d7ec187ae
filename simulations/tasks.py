"""Celery tasks: thin, idempotent, take ids."""

from celery import shared_task
from celery.signals import worker_ready

from simulations import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_simulation_task(simulation_id: str) -> None:
    services.simulation_execute(simulation_id=simulation_id)


@shared_task(ignore_result=True)
def reconcile_stale_simulations() -> int:
    return services.reconcile_stale_simulations()


@shared_task(ignore_result=True)
def apply_storage_retention() -> dict[str, int]:
    """Hourly (CELERY_BEAT_SCHEDULE): delete expired results and, if enabled, unused models."""
    return services.storage_retention_apply()


@worker_ready.connect
def reconcile_on_worker_start(**_kwargs) -> None:
    reconcile_stale_simulations.delay()
