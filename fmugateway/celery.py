"""The Celery app; configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fmugateway.settings")

app = Celery("fmugateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Tasks that call Stripe go to their own queue, which only fly.toml's `billing` group
# consumes: the simulation workers, which run customers' code, hold no Stripe key and
# take only the default queue (simulations.workers.consumes_default_queue tells them
# apart). Every other task stays on the default queue. (Routes here rather than a
# `queue=` task option, which Celery 6 drops.)
BILLING_QUEUE = "billing"
app.conf.task_routes = {"billing.tasks.*": {"queue": BILLING_QUEUE}}


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(**_kwargs) -> None:
    """Treat each task like a request: keep a healthy connection for CONN_MAX_AGE.

    Celery's Django fixup would close it around every task (CELERY_DB_REUSE_MAX in
    settings stops that), and a new PostgreSQL connection costs more CPU than a run
    of a small model.
    """
    from django.db import close_old_connections

    close_old_connections()
