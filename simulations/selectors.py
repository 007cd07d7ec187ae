"""Reads of models and runs, always scoped to their owner (another's id is simply not found)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from simulations.models import Model, Simulation, WorkerStatus
from simulations.notifications import FinishedNotices


def models_for_owner(*, owner) -> QuerySet[Model]:
    return Model.objects.filter(owner=owner)


def model_for_owner(*, owner, model_id: uuid.UUID | str) -> Model:
    """Raises Model.DoesNotExist for another account's model, as for a missing one."""
    return models_for_owner(owner=owner).get(pk=model_id)


def simulations_for_owner(*, owner) -> QuerySet[Simulation]:
    return Simulation.objects.filter(owner=owner)


def simulation_for_owner(*, owner, simulation_id: uuid.UUID | str) -> Simulation:
    return simulations_for_owner(owner=owner).get(pk=simulation_id)


def storage_object_in_use(*, storage_name: str) -> bool:
    """Whether any model row, of any owner, still points at this stored FMU."""
    return Model.objects.filter(storage_name=storage_name).exists()


# Without notices (embedded broker): poll fast at first, then back off.
WAIT_POLL_SCHEDULE = ((1.0, 0.01), (5.0, 0.05), (float("inf"), 0.25))
# With notices, the database is still re-read this often in case a notice was lost.
WAIT_RECHECK_SECONDS = 1.0


def simulation_wait_until_finished(*, simulation: Simulation, timeout: float) -> Simulation:
    """Refresh the run until it has finished or `timeout` seconds have passed."""
    if timeout <= 0 or simulation.is_finished:
        return simulation
    started = time.monotonic()
    with FinishedNotices(simulation.pk) as notices:
        simulation.refresh_from_db()  # after subscribing, so no end can slip between
        while not simulation.is_finished:
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                break
            if notices.available:
                notices.wait(min(WAIT_RECHECK_SECONDS, timeout - elapsed))
            else:
                interval = next(step for until, step in WAIT_POLL_SCHEDULE if elapsed < until)
                time.sleep(min(interval, timeout - elapsed))
            simulation.refresh_from_db()
    return simulation


# A worker re-records its status every SANDBOX_CHECK_INTERVAL_SECONDS; a row older than
# this (or three intervals, if longer) belongs to a worker that is gone.
WORKER_STATUS_FRESH_FOR = timedelta(minutes=5)
# What the engine reports when no sandbox server answered (fmuengine.runner).
UNAVAILABLE_ISOLATION = ("unavailable", "unknown")


def workers_refusing_runs() -> QuerySet[WorkerStatus]:
    """Workers that said, within the last few minutes, that they take no run (and why)."""
    fresh_for = max(
        WORKER_STATUS_FRESH_FOR, timedelta(seconds=3 * settings.SANDBOX_CHECK_INTERVAL_SECONDS)
    )
    fresh_since = timezone.now() - fresh_for
    return WorkerStatus.objects.filter(ready=False, checked_at__gte=fresh_since)


def workers_not_fully_isolated() -> QuerySet[WorkerStatus]:
    """Workers whose sandbox, as last recorded, lacks a measure of the "full" level.

    Not limited to fresh rows: where runs may go below full isolation (the embedded mode),
    a warning about a worker that is merely stopped is better than none. A worker that
    restarts re-records its row under its node name. A sandbox that is unavailable runs
    nothing at all, isolated or not: not counted here (/readyz and the admin show it).
    """
    return (
        WorkerStatus.objects.filter(fully_isolated=False)
        .exclude(isolation__in=UNAVAILABLE_ISOLATION)
        .order_by("-checked_at")
    )
