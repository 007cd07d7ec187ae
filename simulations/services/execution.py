"""Executing runs on a Celery worker: claim, run in the sandbox, record the outcome.

A worker owns a running run while it renews the run's lease; one whose lease ran out
(its worker died) is failed and refunded by reconcile_stale_simulations. A failure that
is ours, not the model's (the sandbox would not start, the result could not be stored,
the worker was lost), fails the run and gives its charge back: simulations.run_errors
says which codes are ours.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.charges import Charge
from billing.services import run_charge_give_back
from core.storage import open_stored_file, stored_file_local_path
from fmuengine import runner
from fmuengine.protocol import RunErrorCode
from simulations.locks import lock_simulation
from simulations.models import FINISHED_STATUSES, Simulation, SimulationStatus
from simulations.results import store_result
from simulations.run_errors import AppRunErrorCode, refund_due
from simulations.services.lifecycle import run_claim, run_fail, run_finish, run_lease_renew
from simulations.workers import default_worker_name, sandbox_require_ready

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_SECONDS = 0.5
CANCEL_POLL_INTERVAL_SECONDS = 0.5


def sandbox_limits(params: dict) -> runner.SandboxLimits:
    return runner.SandboxLimits(
        cpu_seconds=settings.SIMULATION_CPU_SECONDS,
        memory_bytes=settings.SIMULATION_MEMORY_BYTES,
        file_size_bytes=settings.SIMULATION_RESULT_MAX_BYTES,
        max_processes=settings.SIMULATION_MAX_PROCESSES,
        wall_timeout_seconds=min(params["timeout"], settings.SIMULATION_MAX_WALL_SECONDS),
        disk_bytes=settings.SIMULATION_DISK_BYTES,
    )


def sandbox_params(params: dict) -> dict:
    """The run's parameters as the sandbox takes them: fmpy's arguments, input as rows."""
    arguments = {name: value for name, value in params.items() if name != "timeout"}
    table = params.get("input")
    if table:
        columns = ["time", *[name for name in table if name != "time"]]
        arguments["input"] = {
            "columns": columns,
            "rows": [list(row) for row in zip(*(table[name] for name in columns), strict=True)],
        }
    return arguments


def simulation_execute(
    *, simulation_id: uuid.UUID | str, worker: str | None = None
) -> Simulation | None:
    """Claim a queued run, run it in the sandbox and record the outcome.

    Idempotent: a run that is no longer queued (a redelivered task) is left alone.
    Fail closed: below the required sandbox isolation this raises SandboxNotReady before
    the claim, so the run stays queued (not failed, not refunded) for a worker that can
    run it; `worker` (Celery's node name) is whose status is recorded.
    """
    if not Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.QUEUED).exists():
        return None  # checked first, so that no refusal keeps a cancelled run's task alive
    sandbox_require_ready(worker=worker or default_worker_name(), simulation_id=simulation_id)
    if not run_claim(simulation_id=simulation_id, now=timezone.now()):
        return None
    simulation = Simulation.objects.select_related("model").get(pk=simulation_id)
    work_dir = Path(tempfile.mkdtemp(prefix="fmugw-run-"))
    try:
        model = simulation.model
        assert model is not None, "a model is kept while a run of it is queued or running"
        # The runner copies the FMU into the run's own dir: from local storage directly,
        # from object storage through a temporary file, the only local copy.
        fmu_path = stored_file_local_path(name=model.storage_name)
        if fmu_path is None:
            fmu_path = work_dir / "model.fmu"
            with (
                open_stored_file(name=model.storage_name) as stored,
                fmu_path.open("wb") as local,
            ):
                shutil.copyfileobj(stored, local, 1024 * 1024)
        outcome = runner.run_simulation(
            fmu_path=fmu_path,
            params=sandbox_params(simulation.params),
            limits=sandbox_limits(simulation.params),
            on_progress=_progress_reporter(simulation.pk),
            should_cancel=_cancel_checker(simulation.pk),
            model_key=model.sha256,
        )
    except Exception:
        logger.exception("simulation %s could not be run", simulation_id)
        return _platform_fault_finish(
            simulation,
            RunErrorCode.SANDBOX_FAILED,
            "The platform could not run this simulation; it is not charged.",
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    try:
        return _outcome_record(simulation, outcome)
    finally:
        outcome.cleanup()


def _progress_reporter(simulation_id) -> Callable[[float], None]:
    # The claim just set the lease: a run shorter than one interval writes nothing here.
    last_write = time.monotonic()

    def report(progress: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        last_write = now
        run_lease_renew(simulation_id=simulation_id, progress=progress)

    return report


def _cancel_checker(simulation_id) -> Callable[[], bool]:
    last_check = time.monotonic()
    cancelled = False

    def should_cancel() -> bool:
        nonlocal last_check, cancelled
        now = time.monotonic()
        if cancelled or now - last_check < CANCEL_POLL_INTERVAL_SECONDS:
            return cancelled
        last_check = now
        # The lease is renewed here too, so a run that reports no progress stays owned.
        run_lease_renew(simulation_id=simulation_id)
        cancelled = Simulation.objects.filter(
            pk=simulation_id, cancel_requested_at__isnull=False
        ).exists()
        return cancelled

    return should_cancel


OUTCOME_STATUS = {
    "succeeded": SimulationStatus.SUCCEEDED,
    "failed": SimulationStatus.FAILED,
    "timed_out": SimulationStatus.TIMED_OUT,
    "cancelled": SimulationStatus.CANCELLED,
    "platform_error": SimulationStatus.FAILED,
}


def _outcome_record(simulation: Simulation, outcome: runner.SandboxOutcome) -> Simulation:
    fields: dict[str, Any] = {
        "status": OUTCOME_STATUS[outcome.status],
        "finished_at": timezone.now(),
        "cpu_seconds": outcome.cpu_seconds,
        "wall_seconds": outcome.wall_seconds,
        "log_tail": outcome.log_tail or "",
        "error_code": outcome.error_code or "",
        "error_message": outcome.message or "",
        "lease_expires_at": None,
    }
    if outcome.status == "succeeded":
        try:
            assert outcome.result_path is not None, "the engine's succeeded run has a result"
            stored = store_result(simulation=simulation, result_path=outcome.result_path)
        except Exception:
            logger.exception("result of simulation %s could not be stored", simulation.pk)
            return _platform_fault_finish(
                simulation,
                AppRunErrorCode.RESULT_STORAGE_FAILED,
                "The result could not be stored; the run is not charged. Please retry.",
                extra={**fields, "error_code": "", "error_message": ""},
            )
        fields.update(progress=1.0, **stored)
        return run_finish(simulation=simulation, fields=fields)
    # The engine always names why a run did not succeed; a platform error it could not
    # name is still the sandbox's.
    error_code = outcome.error_code or RunErrorCode.SANDBOX_FAILED
    if refund_due(error_code):
        return _platform_fault_finish(simulation, error_code, outcome.message or "", extra=fields)
    return run_finish(simulation=simulation, fields=fields)


def _platform_fault_finish(
    simulation: Simulation, error_code: str, message: str, extra: dict | None = None
) -> Simulation:
    """Our fault, not the model's: the run fails and its charge is given back.

    Only for an error code run_errors counts as the platform's (refund_due). Logged at
    WARNING with its cause, whether or not there was a charge to give back: every
    platform fault is something an operator should be able to find by run id.
    """
    if not refund_due(error_code):
        raise ValueError(f"{error_code!r} is not the platform's fault")
    with transaction.atomic():
        locked = lock_simulation(simulation.pk)
        if locked.status in FINISHED_STATUSES:
            return locked
        charge = Charge.from_json(locked.charge)
        given_back = run_charge_give_back(charge=charge, reason=error_code)
        run_fail(
            simulation=locked,
            error_code=error_code,
            message=message,
            charge=given_back,
            fields=extra,
        )
        if given_back.refunded and not charge.refunded:
            outcome = "its charge is refunded"
        elif charge.refunded:
            outcome = "its charge was refunded already"
        else:
            outcome = f"nothing to refund ({charge.kind or 'no charge'})"
    # Once its transaction is done: a rolled-back refund is not reported as one.
    logger.warning(
        "run %s failed through the platform's fault (%s: %s): %s",
        locked.pk,
        error_code,
        message,
        outcome,
    )
    return locked


def reconcile_stale_simulations() -> int:
    """Fail (and refund) runs whose worker stopped renewing their lease: none stays "running"."""
    stale = Simulation.objects.filter(
        status=SimulationStatus.RUNNING, lease_expires_at__lt=timezone.now()
    ).values_list("pk", flat=True)
    count = 0
    for simulation_id in list(stale):
        simulation = Simulation.objects.get(pk=simulation_id)
        _platform_fault_finish(
            simulation,
            AppRunErrorCode.WORKER_LOST,
            "The worker running this simulation stopped; it is not charged. Please retry.",
        )
        count += 1
    return count
