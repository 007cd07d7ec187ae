"""A run's state machine on one screen: every change of `Simulation.status` is a function here.

    from             to                         function            called by
    (none)           queued                     (an INSERT)         runs: simulation_create,
                                                                    simulation_retry
    queued           running                    run_claim           execution: the worker
    queued           cancelled, charge given    run_cancel_queued   runs: simulation_cancel
                     back
    running          succeeded, failed,         run_finish          execution: the sandbox's
                     timed_out or cancelled                         outcome
    queued, running  failed, charge given back  run_fail            execution: a platform fault,
                                                                    a lost lease

and two writes to a running run that change no status:

    running          cancel requested           run_cancel_request  runs: simulation_cancel (the
                                                                    worker then stops the sandbox:
                                                                    outcome "cancelled")
    running          lease renewed (progress)   run_lease_renew     execution: the progress and
                                                                    cancel callbacks

Succeeded, failed, timed_out and cancelled are final: no function here leaves them.

Each function is one UPDATE whose WHERE names the state it leaves, so of the actors that
may race for a run (a redelivered task, the owner's cancel, the stale-lease reconciler),
exactly one moves it; the others match no row and learn so from the return value (False;
run_finish re-reads the row). The ones that give a charge back (run_cancel_queued,
run_fail) are called with the run's row locked (simulations.locks.lock_simulation), so
the refund and the transition commit together or not at all. A run that reaches a final
state is announced after commit (simulations.notifications), which wakes the API's
`?wait=` requests.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.charges import Charge
from fmuengine.protocol import RunErrorCode
from simulations.models import Simulation, SimulationStatus
from simulations.notifications import publish_simulation_finished


def run_claim(*, simulation_id: uuid.UUID | str, now: datetime) -> bool:
    """queued -> running, with a fresh lease and one more attempt; False if not queued."""
    return bool(
        Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.QUEUED).update(
            status=SimulationStatus.RUNNING,
            started_at=now,
            lease_expires_at=now + _lease(),
            attempts=F("attempts") + 1,
        )
    )


def run_lease_renew(*, simulation_id: uuid.UUID | str, progress: float | None = None) -> None:
    """A running run's worker is alive: push its lease on (and record its progress, 0..1).

    Not a transition, but what keeps one from happening: a run whose lease runs out is
    failed by reconcile_stale_simulations.
    """
    fields: dict[str, Any] = {"lease_expires_at": timezone.now() + _lease()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, progress))
    Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.RUNNING).update(**fields)


def run_cancel_request(*, simulation: Simulation, now: datetime) -> bool:
    """Ask a running run's worker to stop it (once: the first request's time is kept)."""
    requested = Simulation.objects.filter(
        pk=simulation.pk, status=SimulationStatus.RUNNING, cancel_requested_at__isnull=True
    ).update(cancel_requested_at=now)
    if requested:
        simulation.cancel_requested_at = now
    return bool(requested)


def run_cancel_queued(*, simulation: Simulation, now: datetime, charge: Charge) -> bool:
    """queued -> cancelled, storing the charge as given back; the run's row is locked."""
    fields = {
        "status": SimulationStatus.CANCELLED,
        "finished_at": now,
        "cancel_requested_at": now,
        "error_code": RunErrorCode.CANCELLED,
        "error_message": "Cancelled before it started.",
        "charge": charge.to_json(),
    }
    return _transition(simulation, fields, leaving=[SimulationStatus.QUEUED])


def run_finish(*, simulation: Simulation, fields: dict[str, Any]) -> Simulation:
    """running -> the sandbox's outcome (fields["status"]), with its timings, log and result.

    A run cancelled or failed meanwhile stays as it is, and the instance is re-read to say
    so. Announced either way, as before this module existed: whoever finished it first
    announced it too, and a listener re-reads the row, so a second notice costs nothing.
    """
    updated = Simulation.objects.filter(pk=simulation.pk, status=SimulationStatus.RUNNING).update(
        **fields
    )
    _announce_finished(simulation.pk)
    if updated:
        for name, value in fields.items():
            setattr(simulation, name, value)
    else:  # cancelled or failed meanwhile: the row says what it is now
        simulation.refresh_from_db()
    return simulation


def run_fail(
    *,
    simulation: Simulation,
    error_code: str,
    message: str,
    charge: Charge,
    fields: dict[str, Any] | None = None,
) -> bool:
    """queued or running -> failed through the platform's fault, storing the charge as
    given back; the run's row is locked. `fields` are what the run had measured (timings,
    log) when the fault came."""
    fields = dict(fields or {})
    fields.update(
        status=SimulationStatus.FAILED,
        finished_at=fields.get("finished_at") or simulation.finished_at or timezone.now(),
        error_code=error_code,
        error_message=message,
        lease_expires_at=None,
        charge=charge.to_json(),
    )
    return _transition(
        simulation, fields, leaving=[SimulationStatus.QUEUED, SimulationStatus.RUNNING]
    )


def _transition(simulation: Simulation, fields: dict[str, Any], *, leaving: list[str]) -> bool:
    updated = Simulation.objects.filter(pk=simulation.pk, status__in=leaving).update(**fields)
    if updated:
        for name, value in fields.items():
            setattr(simulation, name, value)
        _announce_finished(simulation.pk)
    return bool(updated)


def _announce_finished(simulation_id: uuid.UUID) -> None:
    transaction.on_commit(lambda: publish_simulation_finished(simulation_id))


def _lease() -> timedelta:
    return timedelta(seconds=settings.SIMULATION_LEASE_SECONDS)
