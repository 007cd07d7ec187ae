"""Writes for runs as callers ask for them: create (paid, idempotent), cancel, retry, refund."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.charges import Charge, ChargeKind
from billing.services import (
    PaymentRequired,
    run_charge_give_back,
    run_charge_link,
    run_charge_take,
    run_payment_request,
)
from core.errors import Conflict
from core.problems import ProblemCode
from fmuengine.protocol import RunErrorCode
from simulations.locks import lock_simulation
from simulations.models import Model, Simulation, SimulationStatus
from simulations.params import simulation_params
from simulations.run_errors import refund_due
from simulations.services.lifecycle import run_cancel_queued, run_cancel_request

# The name simulations.tasks registers run_simulation_task under (a test pins the two).
RUN_SIMULATION_TASK = "simulations.tasks.run_simulation_task"

# Retention counts idle days: an hour is precise enough, and saves a write per run.
MODEL_LAST_USED_RESOLUTION = timedelta(hours=1)


def request_fingerprint(*, model_id: str, request: dict) -> str:
    canonical = json.dumps({"model": str(model_id), **request}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def simulation_create(
    *,
    owner,
    model: Model,
    request: dict,
    idempotency_key: str | None = None,
    payment_token: str | None = None,
) -> tuple[Simulation, bool]:
    """Validate, pay for and queue one run; returns (run, created).

    A repeated Idempotency-Key with the same request returns the first run and charges once.
    """
    fingerprint = request_fingerprint(model_id=str(model.pk), request=request)
    if idempotency_key:
        existing = _simulation_replayed(owner, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    params = simulation_params(model=model, request=request)
    try:
        with transaction.atomic():
            charge = run_charge_take(user=owner, payment_token=payment_token)
            simulation = Simulation.objects.create(
                owner=owner,
                model=model,
                model_name=model.model_name,
                params=params,
                idempotency_key=idempotency_key or None,
                request_fingerprint=fingerprint,
                charge=charge.to_json(),
            )
            run_charge_link(charge=charge, simulation=simulation)
            _model_mark_used(model)
            transaction.on_commit(lambda: _enqueue(simulation.pk))
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first. Without a key
        # the error is another one (a model deleted meanwhile): no run of the owner's is it.
        existing = (
            _simulation_replayed(owner, idempotency_key, fingerprint) if idempotency_key else None
        )
        if existing is None:
            raise
        return existing, False
    except PaymentRequired as refused:
        # A concurrent retry with the same key may have won with the same token: same run.
        existing = (
            _simulation_replayed(owner, idempotency_key, fingerprint) if idempotency_key else None
        )
        if existing:
            return existing, False
        # The rolled-back transaction took nothing; the 402's Checkout Session is made now.
        raise run_payment_request(user=owner, refused=refused) from None
    return simulation, True


def _simulation_replayed(owner, idempotency_key: str, fingerprint: str) -> Simulation | None:
    existing = Simulation.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was used for a different request; use a new key.",
            code=ProblemCode.IDEMPOTENCY_KEY_REUSED,
        )
    return existing


def _model_mark_used(model: Model) -> None:
    now = timezone.now()
    if model.last_used_at is not None and model.last_used_at >= now - MODEL_LAST_USED_RESOLUTION:
        return
    Model.objects.filter(pk=model.pk).update(last_used_at=now)
    model.last_used_at = now


def _enqueue(simulation_id: uuid.UUID) -> None:
    # By name, as every service enqueues (simulations/tasks.py says why); routed as .delay().
    current_app.send_task(RUN_SIMULATION_TASK, args=[str(simulation_id)])


def simulation_cancel(*, simulation: Simulation) -> Simulation:
    """A queued run is cancelled (and refunded) at once; a running one is killed by its worker."""
    now = timezone.now()
    with transaction.atomic():
        locked = lock_simulation(simulation.pk)
        if locked.status == SimulationStatus.QUEUED:
            charge = Charge.from_json(locked.charge)
            if refund_due(RunErrorCode.CANCELLED, started=False):
                charge = run_charge_give_back(charge=charge, reason="cancelled before start")
            run_cancel_queued(simulation=locked, now=now, charge=charge)
        elif locked.status == SimulationStatus.RUNNING:
            run_cancel_request(simulation=locked, now=now)
        else:
            raise Conflict(f"The simulation has already finished ({locked.status}).")
    return locked


def simulation_retry(*, simulation: Simulation) -> Simulation:
    """Operators only: a new run with the same parameters, free (the first one was charged)."""
    if not simulation.is_finished:
        raise Conflict("Only a finished simulation can be retried.")
    if simulation.model is None:
        raise Conflict("The model of this simulation has been deleted.")
    with transaction.atomic():
        retry = Simulation.objects.create(
            owner=simulation.owner,
            model=simulation.model,
            model_name=simulation.model_name,
            params=simulation.params,
            charge=Charge(
                kind=ChargeKind.FREE, reason=f"operator retry of {simulation.pk}"
            ).to_json(),
        )
        transaction.on_commit(lambda: _enqueue(retry.pk))
    return retry


def simulation_refund(*, simulation: Simulation, reason: str, operator) -> Simulation:
    """An operator gives a finished run's charge back (e.g. a model failure that was ours).

    Here, not in billing, because it locks and saves the run: billing gives the charge back
    (run_charge_give_back) and never imports simulations.
    """
    with transaction.atomic():
        locked = lock_simulation(simulation.pk)
        charge = Charge.from_json(locked.charge)
        if not charge.is_paid:
            raise Conflict("This run was free: there is nothing to refund.")
        if charge.refunded:
            raise Conflict("This run's charge has already been given back.")
        if not locked.is_finished:
            raise Conflict("Only a finished run can be refunded; cancel it instead.")
        locked.charge = run_charge_give_back(
            charge=charge, reason=f"operator: {reason}", operator=operator
        ).to_json()
        locked.save(update_fields=["charge"])
    return locked
