"""Writes for models: uploads checked and stored once per content, deletes, files released."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction

from core.errors import Conflict
from core.problems import ProblemCode
from core.storage import (
    StorageUnavailable,
    delete_stored_file,
    store_file,
    stored_file_exists,
)
from fmuengine.inspection import FMULimits, InvalidFMU, inspect_fmu
from simulations.locks import lock_stored_fmu
from simulations.models import Model, SimulationStatus, StudyStatus
from simulations.selectors import storage_object_in_use
from simulations.services.errors import FMURejected

logger = logging.getLogger(__name__)


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
        lock_stored_fmu(sha256)
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


def model_delete(*, model: Model) -> None:
    """Delete the row; the stored file goes (after commit) only when no other row uses it.

    The file itself is released by `stored_fmu_release`, which a post_delete receiver calls
    for every deleted model row, so cascades (an account deleted) release files too.
    """
    active = (
        model.simulations.filter(
            status__in=[SimulationStatus.QUEUED, SimulationStatus.RUNNING]
        ).exists()
        or model.studies.filter(status__in=[StudyStatus.QUEUED, StudyStatus.RUNNING]).exists()
    )
    if active:
        raise Conflict(
            "The model has queued or running simulations or studies; cancel them first.",
            code=ProblemCode.MODEL_IN_USE,
        )
    model.delete()


def stored_fmu_release(*, sha256: str, storage_name: str) -> bool:
    """Delete a stored FMU if no model row (of any owner) references it; True if deleted.

    Best effort: with storage down the object stays (no row points at it any more).
    """
    with transaction.atomic():
        lock_stored_fmu(sha256)
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
