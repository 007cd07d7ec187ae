"""Celery tasks: thin, idempotent, take ids.

The import rule between tasks and services: tasks import `simulations.services` and
only call it; services never import tasks: they enqueue by task name
(`current_app.send_task(RUN_SIMULATION_TASK, ...)` after commit), so the dependency points
one way, with no lazy import and no exemption in the import contracts. A test pins each
name to the task registered under it. (send_task ignores CELERY_TASK_ALWAYS_EAGER; no
test or default relies on eager runs: they run on a real worker or call the service.)
"""

import logging
import random

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from simulations import services
from simulations.workers import SandboxNotReady, consumes_default_queue, worker_sandbox_report

logger = logging.getLogger(__name__)


# max_retries=None here, not in retry(): there None means "the task's default", 3.
@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=None
)
def run_simulation_task(self, simulation_id: str) -> None:
    """Run one queued simulation; a worker below the required isolation hands it back.

    On refusal (SandboxNotReady: nothing claimed, the run still queued) the task is
    retried: `retry()` publishes a new copy of the message, due in
    SANDBOX_REFUSAL_RETRY_SECONDS, and only then is this one acknowledged (acks_late), so
    the run is never without a message. Any worker may fetch the copy (it holds it until
    it is due): a healthy one runs it, this one refuses again, logged, and passes it on.
    (A worker that found its sandbox below the level at its last check consumes nothing
    at all: SandboxWatch. This refusal is for runs fetched before that.)
    Not `Reject(requeue=True)`: on Redis that puts the message straight back at the head
    of the queue, where this same idle worker (prefetch 1) takes it again at once, a loop
    with no back-off that keeps the run mostly in the refusing worker's hands and floods
    the log. No retry limit: the run waits, as queued runs do, until a worker can run it
    or its owner cancels it (the next delivery then finds it not queued, and ends).
    """
    try:
        services.simulation_execute(simulation_id=simulation_id, worker=self.request.hostname)
    except SandboxNotReady as refused:
        if self.request.is_eager:
            raise  # eager retries would recurse at once, in the caller's request
        # Up to a second of jitter: a whole-second countdown is in step with kombu's
        # 1 s BRPOP cycle, which keeps this worker first in line (see SandboxWatch).
        countdown = settings.SANDBOX_REFUSAL_RETRY_SECONDS + random.random()  # noqa: S311
        raise self.retry(exc=refused, countdown=countdown) from refused


# Routed to the `studies` queue (fmugateway/celery.py), which workers read after the
# default one: a run waiting there takes the next free slot before another chunk does.
@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=None
)
def run_study_chunk_task(self, study_id: str) -> None:
    """One ticket of a study: claim its next chunk of queued cases, run and record it, and
    queue the next ticket while cases remain (services.study_chunk_execute). A ticket that
    finds nothing to claim ends quietly, so a duplicate delivery does no harm. Refused by a
    worker below the required isolation (nothing claimed), it is retried later, as a run is.
    """
    try:
        services.study_chunk_execute(study_id=study_id, worker=self.request.hostname or "")
    except SandboxNotReady as refused:
        if self.request.is_eager:
            raise
        countdown = settings.SANDBOX_REFUSAL_RETRY_SECONDS + random.random()  # noqa: S311
        raise self.retry(exc=refused, countdown=countdown) from refused


@shared_task(ignore_result=True)
def reconcile_stale_simulations() -> int:
    return services.reconcile_stale_simulations()


@shared_task(ignore_result=True)
def reconcile_stale_study_chunks() -> int:
    """Every minute (CELERY_BEAT_SCHEDULE) and at worker start: chunks whose worker died."""
    return services.reconcile_stale_study_chunks()


@shared_task(ignore_result=True)
def apply_storage_retention() -> dict[str, int]:
    """Hourly (CELERY_BEAT_SCHEDULE): delete expired results and, if enabled, unused models."""
    return services.storage_retention_apply()


@worker_ready.connect
def reconcile_on_worker_start(sender, **_kwargs) -> None:
    if consumes_default_queue(sender.app):  # a simulation worker, not the billing one
        reconcile_stale_simulations.delay()
        reconcile_stale_study_chunks.delay()


@worker_ready.connect
def watch_sandbox_from_worker_start(sender, **_kwargs) -> None:
    """Check the sandbox as the worker starts, then every SANDBOX_CHECK_INTERVAL_SECONDS
    on Celery's own timer (see SandboxWatch). `sender` is the worker's consumer; this runs
    in its loop, before the loop first asks the broker for a message. Only workers that
    take runs: the billing group's (`-Q billing`) has no sandbox and is no one's concern
    here (/readyz would otherwise name it forever)."""
    if not consumes_default_queue(sender.app):
        return
    watch = SandboxWatch(sender)
    watch.check(at_start=True)
    sender.timer.call_repeatedly(settings.SANDBOX_CHECK_INTERVAL_SECONDS, watch.check)


class SandboxWatch:
    """A worker's main process watching its own sandbox, which it records each time.

    While the sandbox is below the required isolation the worker stops consuming the
    default queue, where the runs are, and the studies queue, where the study chunks are
    (other queues it takes, e.g. `make run`'s billing one, go on), and resumes once a
    check finds it ready. Refusing each run (the check in
    simulation_execute) is not enough on its own: a refusing worker that kept consuming
    would take its share of new runs, and most of its own retries too. Redis serves the
    longest-waiting BRPOP first, and the refusing worker's wait restarts when it receives
    the message, so whole-second countdowns keep it first in line. Healthy workers would
    sit idle while runs waited. Paused, it leaves every run to them; with no worker ready,
    runs stay queued until one is. (Housekeeping tasks share that queue: others do them.)
    """

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self.hostname = consumer.hostname
        app = consumer.app
        # The queues of sandboxed work this worker reads: runs (the default queue) and
        # study chunks (wherever the chunk task is routed), not billing's.
        studies = app.amqp.router.route({}, run_study_chunk_task.name, args=[""])["queue"].name
        self.queues = [
            name
            for name in dict.fromkeys([app.conf.task_default_queue, studies])
            if name in app.amqp.queues.consume_from
        ]
        self.paused = False

    def _each(self, method) -> None:
        for name in self.queues:
            method(name)

    def check(self, at_start: bool = False) -> None:
        status = worker_sandbox_report(worker=self.hostname, at_start=at_start)
        if status is None:
            return  # could not check: stay as it is
        if not status.ready and not self.paused:
            if at_start:  # in the loop, before its first poll: not one message fetched
                self._each(self.consumer.cancel_task_queue)
            else:  # the timer may be a thread of its own: the loop does it
                self.consumer.call_soon(self._each, self.consumer.cancel_task_queue)
            self.paused = True
            for name in self.queues:
                logger.error(
                    "worker %s stops consuming %s until its sandbox is ready", self.hostname, name
                )
        elif status.ready and self.paused:
            self.consumer.call_soon(self._each, self.consumer.add_task_queue)
            self.paused = False
            for name in self.queues:
                logger.info("worker %s consumes %s again", self.hostname, name)
