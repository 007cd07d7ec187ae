"""The Celery app; configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu import Queue

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
# A study's chunks go to a queue of their own, which the simulation workers read after
# the default one (runs): with the Redis broker's "priority" queue order (settings'
# CELERY_BROKER_TRANSPORT_OPTIONS) a worker's BRPOP names the default queue first, so a
# slot that frees takes a waiting run before another chunk, and a chunk holds a slot for
# about STUDY_CHUNK_SECONDS. See docs/studies.md.
STUDIES_QUEUE = "studies"
app.conf.task_routes = {
    "billing.tasks.*": {"queue": BILLING_QUEUE},
    "simulations.tasks.run_study_chunk_task": {"queue": STUDIES_QUEUE},
}
# The queues a worker without -Q consumes, in the order it polls them: runs first. (The
# billing queue is not here: only `-Q billing` workers read it, and it is made on use.)
_default_queue = app.conf.task_default_queue
app.conf.task_queues = (
    Queue(_default_queue, routing_key=_default_queue),
    Queue(STUDIES_QUEUE, routing_key=STUDIES_QUEUE),
)


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
