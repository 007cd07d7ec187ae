"""Writes for models and runs: uploads, run creation, execution, cancel, reconciliation."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.charges import Charge, ChargeKind
from billing.services import (
    PaymentRequired,
    run_charge_give_back,
    run_charge_link,
    run_charge_take,
    run_payment_request,
)
from core.errors import DomainError
from fmuengine import runner
from fmuengine.inspection import FMULimits, InvalidFMU, inspect_fmu
from simulations.models import FINISHED_STATUSES, Model, Simulation, SimulationStatus
from simulations.notifications import publish_simulation_finished
from simulations.params import simulation_params
from simulations.selectors import storage_object_in_use
from simulations.storage import (
    StorageUnavailable,
    delete_stored_file,
    open_stored_file,
    store_file,
    stored_file_exists,
    stored_file_local_path,
    stored_files_older_than,
)
from simulations.workers import default_worker_name, sandbox_require_ready

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_SECONDS = 0.5
CANCEL_POLL_INTERVAL_SECONDS = 0.5


class FMURejected(DomainError):
    """An upload that is not a usable FMU (the code says which check failed)."""

    def __init__(self, invalid: InvalidFMU) -> None:
        super().__init__(invalid.message, code=invalid.code.replace("_", "-"))
        self.status_code = invalid.status


class ModelInUse(DomainError):
    status_code = 409
    code = "model-in-use"


class SimulationConflict(DomainError):
    status_code = 409
    code = "conflict"


class IdempotencyKeyReused(DomainError):
    status_code = 409
    code = "idempotency-key-reused"


# --- models ----------------------------------------------------------------------------


def fmu_limits() -> FMULimits:
    return FMULimits(
        max_entries=settings.FMU_MAX_ENTRIES,
        max_uncompressed_bytes=settings.FMU_MAX_UNCOMPRESSED_BYTES,
        max_compression_ratio=settings.FMU_MAX_COMPRESSION_RATIO,
    )


def fmu_storage_name(sha256: str) -> str:
    return f"fmus/{sha256[:2]}/{sha256}.fmu"


def model_upload(*, owner, file_path: Path, file_name: str, sha256: str, size: int) -> Model:
    """Check an uploaded FMU on local disk, store it once per content, and record it for owner.

    Nothing reaches storage unless the FMU passed every check, and the row is created only
    once its file is stored: with storage down this raises StorageUnavailable (503) and
    creates nothing.
    """
    file_path = Path(file_path)
    try:
        summary = inspect_fmu(file_path, limits=fmu_limits())
    except InvalidFMU as invalid:
        raise FMURejected(invalid) from invalid
    storage_name = fmu_storage_name(sha256)
    with transaction.atomic():
        _lock_stored_fmu(sha256)
        if not stored_file_exists(name=storage_name):
            store_file(name=storage_name, path=file_path)
        return Model.objects.create(
            owner=owner,
            file_name=Path(file_name).name[:255] or "model.fmu",
            sha256=sha256,
            size=size,
            storage_name=storage_name,
            model_name=summary.model_name,
            description=summary.description or "",
            fmi_version=summary.fmi_version,
            guid=summary.guid,
            generation_tool=summary.generation_tool or "",
            fmi_types=summary.fmi_types,
            runnable_fmi_types=summary.runnable_fmi_types,
            platforms=summary.platforms,
            default_experiment=summary.default_experiment,
            summary=summary.to_json(),
        )


def _lock_stored_fmu(sha256: str) -> None:
    """Inside a transaction: one process at a time stores, references or deletes this FMU.

    Without it the last owner's delete could remove the object just after a new upload of the
    same file found it present, leaving the new row pointing at nothing. PostgreSQL only: the
    embedded SQLite mode is one machine, where this race needs two requests in one instant.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(sha256[:15], 16)])


def model_delete(*, model: Model) -> None:
    """Delete the row; the stored file goes (after commit) only when no other row uses it.

    The file itself is released by `stored_fmu_release`, which a post_delete receiver calls
    for every deleted model row, so cascades (an account deleted) release files too.
    """
    active = model.simulations.filter(
        status__in=[SimulationStatus.QUEUED, SimulationStatus.RUNNING]
    ).exists()
    if active:
        raise ModelInUse("The model has queued or running simulations; cancel them first.")
    model.delete()


def stored_fmu_release(*, sha256: str, storage_name: str) -> bool:
    """Delete a stored FMU if no model row (of any owner) references it; True if deleted.

    Best effort: with storage down the object stays (no row points at it any more).
    """
    with transaction.atomic():
        _lock_stored_fmu(sha256)
        if storage_object_in_use(storage_name=storage_name):
            return False
        try:
            delete_stored_file(name=storage_name)
        except StorageUnavailable:
            logger.warning("stored FMU %s was left in storage: storage unavailable", storage_name)
            return False
    return True


def stored_result_release(*, storage_name: str) -> bool:
    """Delete the result of a deleted run; best effort, like stored_fmu_release."""
    try:
        delete_stored_file(name=storage_name)
    except StorageUnavailable:
        logger.warning("result %s was left in storage: storage unavailable", storage_name)
        return False
    return True


# --- creating runs -----------------------------------------------------------------------


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
        existing = _replayed_simulation(owner, idempotency_key, fingerprint)
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
        # A concurrent request with the same Idempotency-Key committed first.
        existing = _replayed_simulation(owner, idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False
    except PaymentRequired as refused:
        # A concurrent retry with the same key may have won with the same token: same run.
        existing = idempotency_key and _replayed_simulation(owner, idempotency_key, fingerprint)
        if existing:
            return existing, False
        # The rolled-back transaction took nothing; the 402's Checkout Session is made now.
        raise run_payment_request(user=owner, refused=refused) from None
    return simulation, True


def _replayed_simulation(owner, idempotency_key: str, fingerprint: str) -> Simulation | None:
    existing = Simulation.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different request; use a new key."
        )
    return existing


def _enqueue(simulation_id: uuid.UUID) -> None:
    from simulations.tasks import run_simulation_task

    run_simulation_task.delay(str(simulation_id))


# --- cancel and retry ----------------------------------------------------------------------


def simulation_cancel(*, simulation: Simulation) -> Simulation:
    """A queued run is cancelled (and refunded) at once; a running one is killed by its worker."""
    now = timezone.now()
    with transaction.atomic():
        locked = Simulation.objects.select_for_update().get(pk=simulation.pk)
        if locked.status == SimulationStatus.QUEUED:
            locked.status = SimulationStatus.CANCELLED
            locked.finished_at = now
            locked.cancel_requested_at = now
            locked.error_code = "cancelled"
            locked.error_message = "Cancelled before it started."
            locked.charge = run_charge_give_back(
                charge=Charge.from_json(locked.charge), reason="cancelled before start"
            ).to_json()
            locked.save()
            _announce_finished(locked.pk)
        elif locked.status == SimulationStatus.RUNNING:
            if locked.cancel_requested_at is None:
                locked.cancel_requested_at = now
                locked.save(update_fields=["cancel_requested_at"])
        else:
            raise SimulationConflict(f"The simulation has already finished ({locked.status}).")
    return locked


def simulation_retry(*, simulation: Simulation) -> Simulation:
    """Operators only: a new run with the same parameters, free (the first one was charged)."""
    if not simulation.is_finished:
        raise SimulationConflict("Only a finished simulation can be retried.")
    if simulation.model is None:
        raise SimulationConflict("The model of this simulation has been deleted.")
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
    """An operator gives a finished run's charge back (e.g. a model failure that was ours)."""
    with transaction.atomic():
        locked = Simulation.objects.select_for_update().get(pk=simulation.pk)
        charge = Charge.from_json(locked.charge)
        if not charge.is_paid:
            raise SimulationConflict("This run was free: there is nothing to refund.")
        if charge.refunded:
            raise SimulationConflict("This run's charge has already been given back.")
        if not locked.is_finished:
            raise SimulationConflict("Only a finished run can be refunded; cancel it instead.")
        locked.charge = run_charge_give_back(
            charge=charge, reason=f"operator: {reason}", operator=operator
        ).to_json()
        locked.save(update_fields=["charge"])
    return locked


# --- executing runs (Celery worker) ----------------------------------------------------------


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
    now = timezone.now()
    claimed = Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.QUEUED).update(
        status=SimulationStatus.RUNNING,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=settings.SIMULATION_LEASE_SECONDS),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    simulation = Simulation.objects.select_related("model").get(pk=simulation_id)
    work_dir = Path(tempfile.mkdtemp(prefix="fmugw-run-"))
    try:
        # The runner copies the FMU into the run's own dir: from local storage directly,
        # from object storage through a temporary file, the only local copy.
        fmu_path = stored_file_local_path(name=simulation.model.storage_name)
        if fmu_path is None:
            fmu_path = work_dir / "model.fmu"
            with (
                open_stored_file(name=simulation.model.storage_name) as stored,
                fmu_path.open("wb") as local,
            ):
                shutil.copyfileobj(stored, local, 1024 * 1024)
        outcome = runner.run_simulation(
            fmu_path=fmu_path,
            params=sandbox_params(simulation.params),
            limits=sandbox_limits(simulation.params),
            on_progress=_progress_reporter(simulation.pk),
            should_cancel=_cancel_checker(simulation.pk),
            model_key=simulation.model.sha256,
        )
    except Exception:
        logger.exception("simulation %s could not be run", simulation_id)
        return _finish_with_platform_fault(
            simulation,
            "sandbox_failed",
            "The platform could not run this simulation; it is not charged.",
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    try:
        return _record_outcome(simulation, outcome)
    finally:
        outcome.cleanup()


# Retention counts idle days: an hour is precise enough, and saves a write per run.
MODEL_LAST_USED_RESOLUTION = timedelta(hours=1)


def _model_mark_used(model: Model) -> None:
    now = timezone.now()
    if model.last_used_at is not None and model.last_used_at >= now - MODEL_LAST_USED_RESOLUTION:
        return
    Model.objects.filter(pk=model.pk).update(last_used_at=now)
    model.last_used_at = now


def _progress_reporter(simulation_id):
    # The claim just set the lease: a run shorter than one interval writes nothing here.
    last_write = time.monotonic()

    def report(progress: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        last_write = now
        Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.RUNNING).update(
            progress=max(0.0, min(1.0, progress)),
            lease_expires_at=timezone.now() + timedelta(seconds=settings.SIMULATION_LEASE_SECONDS),
        )

    return report


def _cancel_checker(simulation_id):
    last_check = time.monotonic()
    cancelled = False

    def should_cancel() -> bool:
        nonlocal last_check, cancelled
        now = time.monotonic()
        if cancelled or now - last_check < CANCEL_POLL_INTERVAL_SECONDS:
            return cancelled
        last_check = now
        # The lease is renewed here too, so a run that reports no progress stays owned.
        Simulation.objects.filter(pk=simulation_id, status=SimulationStatus.RUNNING).update(
            lease_expires_at=timezone.now() + timedelta(seconds=settings.SIMULATION_LEASE_SECONDS)
        )
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


def _record_outcome(simulation: Simulation, outcome: runner.SandboxOutcome) -> Simulation:
    fields = {
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
        from simulations.results import store_result

        try:
            stored = store_result(simulation=simulation, result_path=outcome.result_path)
        except Exception:
            logger.exception("result of simulation %s could not be stored", simulation.pk)
            return _finish_with_platform_fault(
                simulation,
                "result_storage_failed",
                "The result could not be stored; the run is not charged. Please retry.",
                extra={**fields, "error_code": "", "error_message": ""},
            )
        fields.update(progress=1.0, **stored)
    if outcome.status == "platform_error":
        return _finish_with_platform_fault(
            simulation, outcome.error_code or "sandbox_failed", outcome.message or "", extra=fields
        )
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


def _finish_with_platform_fault(
    simulation: Simulation, error_code: str, message: str, extra: dict | None = None
) -> Simulation:
    """Our fault, not the model's: the run fails and its charge is given back.

    Logged at WARNING with its cause, whether or not there was a charge to give back:
    every platform fault is something an operator should be able to find by run id.
    """
    with transaction.atomic():
        locked = Simulation.objects.select_for_update().get(pk=simulation.pk)
        if locked.status in FINISHED_STATUSES:
            return locked
        for name, value in (extra or {}).items():
            setattr(locked, name, value)
        locked.status = SimulationStatus.FAILED
        locked.finished_at = locked.finished_at or timezone.now()
        locked.error_code = error_code
        locked.error_message = message
        locked.lease_expires_at = None
        charge = Charge.from_json(locked.charge)
        given_back = run_charge_give_back(charge=charge, reason=error_code)
        locked.charge = given_back.to_json()
        if given_back.refunded and not charge.refunded:
            outcome = "its charge is refunded"
        elif charge.refunded:
            outcome = "its charge was refunded already"
        else:
            outcome = f"nothing to refund ({charge.kind or 'no charge'})"
        locked.save()
        _announce_finished(locked.pk)
    # Once its transaction is done: a rolled-back refund is not reported as one.
    logger.warning(
        "run %s failed through the platform's fault (%s: %s): %s",
        locked.pk,
        error_code,
        message,
        outcome,
    )
    return locked


def _announce_finished(simulation_id) -> None:
    transaction.on_commit(lambda: publish_simulation_finished(simulation_id))


def reconcile_stale_simulations() -> int:
    """Fail (and refund) runs whose worker stopped renewing their lease: none stays "running"."""
    stale = Simulation.objects.filter(
        status=SimulationStatus.RUNNING, lease_expires_at__lt=timezone.now()
    ).values_list("pk", flat=True)
    count = 0
    for simulation_id in list(stale):
        simulation = Simulation.objects.get(pk=simulation_id)
        _finish_with_platform_fault(
            simulation,
            "worker_lost",
            "The worker running this simulation stopped; it is not charged. Please retry.",
        )
        count += 1
    return count


# --- retention (Celery beat) -------------------------------------------------------------------

RETENTION_BATCH_SIZE = 200


def results_expire(*, now: datetime | None = None) -> int:
    """Delete results older than RESULT_RETENTION_DAYS; returns how many were deleted.

    Idempotent and resumable: runs are first marked (a marked result is never served again),
    then their objects deleted; a delete that fails is retried on the next call. The run rows
    stay, for the owner's history and the billing trail.
    """
    now = now or timezone.now()
    days = settings.RESULT_RETENTION_DAYS
    if days > 0:
        Simulation.objects.filter(
            finished_at__lt=now - timedelta(days=days), result_deleted_at__isnull=True
        ).exclude(result_name="").update(result_deleted_at=now)
    deleted = 0
    while True:
        marked = list(
            Simulation.objects.filter(result_deleted_at__isnull=False)
            .exclude(result_name="")
            .values_list("pk", "result_name")[:RETENTION_BATCH_SIZE]
        )
        for simulation_id, result_name in marked:
            try:
                delete_stored_file(name=result_name)
            except StorageUnavailable:
                return deleted  # storage is down: the next run picks up where this one stopped
            Simulation.objects.filter(pk=simulation_id, result_name=result_name).update(
                result_name=""
            )
            deleted += 1
        if len(marked) < RETENTION_BATCH_SIZE:
            return deleted


def models_expire(*, now: datetime | None = None) -> int:
    """Delete models no run has used for MODEL_RETENTION_DAYS (off unless enabled).

    A model with a queued or running run is kept; its stored file goes with its last row.
    """
    if not settings.MODEL_RETENTION_ENABLED or settings.MODEL_RETENTION_DAYS <= 0:
        return 0
    now = now or timezone.now()
    stale = (
        Model.objects.annotate(last_activity=Coalesce("last_used_at", "created_at"))
        .filter(last_activity__lt=now - timedelta(days=settings.MODEL_RETENTION_DAYS))
        .order_by("last_activity")
    )
    deleted = 0
    for model in stale.iterator(chunk_size=RETENTION_BATCH_SIZE):
        try:
            model_delete(model=model)
        except ModelInUse:
            continue
        deleted += 1
    return deleted


# A stored file younger than this may belong to an upload or a run still being recorded.
ORPHAN_GRACE = timedelta(hours=1)
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def storage_orphans_delete(*, now: datetime | None = None) -> int:
    """Delete stored FMUs and results that no row points at; returns how many.

    They are left behind when storage was down at the moment their last row went (the
    delete is then only logged). Deleted as rows release them: an FMU under the same
    lock as uploads take, after checking again that no row uses it.
    """
    cutoff = (now or timezone.now()) - ORPHAN_GRACE
    deleted = 0
    try:
        for prefix, referenced, release in (
            ("fmus/", _referenced_fmus, _release_orphaned_fmu),
            ("results/", _referenced_results, stored_result_release),
        ):
            names = stored_files_older_than(prefix=prefix, cutoff=cutoff)
            while batch := list(itertools.islice(names, RETENTION_BATCH_SIZE)):
                for name in set(batch) - referenced(batch):
                    if release(storage_name=name):
                        logger.info("deleted %s: no row pointed at it", name)
                        deleted += 1
    except StorageUnavailable:
        pass  # storage is down: the next pass finds what is left
    return deleted


def _referenced_fmus(names: list[str]) -> set[str]:
    return set(Model.objects.filter(storage_name__in=names).values_list("storage_name", flat=True))


def _referenced_results(names: list[str]) -> set[str]:
    return set(
        Simulation.objects.filter(result_name__in=names).values_list("result_name", flat=True)
    )


def _release_orphaned_fmu(*, storage_name: str) -> bool:
    sha256 = Path(storage_name).stem
    if not SHA256_PATTERN.fullmatch(sha256) or fmu_storage_name(sha256) != storage_name:
        # Not a name an upload writes, so no upload can be racing for it.
        delete_stored_file(name=storage_name)
        return True
    return stored_fmu_release(sha256=sha256, storage_name=storage_name)


def storage_retention_apply(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic retention pass: expired results, unused models, then orphaned files."""
    now = now or timezone.now()
    return {
        "results": results_expire(now=now),
        "models": models_expire(now=now),
        "orphans": storage_orphans_delete(now=now),
    }
