from django.conf import settings


def test_the_workers_beat_runs_every_reconciliation():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "simulations.tasks.reconcile_stale_simulations" in tasks
    assert "billing.tasks.reconcile_payments" in tasks
