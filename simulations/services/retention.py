"""Retention (the worker's beat, hourly): expired results, unused models, orphaned files.

Every pass is idempotent and resumable: what a pass could not delete (storage down) is
left marked or listed for the next one, and run rows stay for the owner's history and
the billing trail.
"""

from __future__ import annotations

import itertools
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.errors import Conflict
from core.storage import StorageUnavailable, delete_stored_file, stored_files_older_than
from simulations.models import Model, Simulation, StudyChunk
from simulations.services.models import (
    fmu_storage_name,
    model_delete,
    stored_fmu_release,
    stored_result_release,
)

logger = logging.getLogger(__name__)

RETENTION_BATCH_SIZE = 200
# A stored file younger than this may belong to an upload or a run still being recorded.
ORPHAN_GRACE = timedelta(hours=1)
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


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
        except Conflict:  # model_delete's only conflict: the model has active runs
            continue
        deleted += 1
    return deleted


def storage_orphans_delete(*, now: datetime | None = None) -> int:
    """Delete stored FMUs, results and study chunk files that no row points at; returns
    how many.

    They are left behind when storage was down at the moment their last row went (the
    delete is then only logged), or by a study chunk that stored its files and then
    could not record them. Deleted as rows release them: an FMU under the same
    lock as uploads take, after checking again that no row uses it.
    """
    cutoff = (now or timezone.now()) - ORPHAN_GRACE
    deleted = 0
    try:
        for prefix, referenced, release in (
            ("fmus/", _referenced_fmus, _release_orphaned_fmu),
            ("results/", _referenced_results, stored_result_release),
            ("studies/", _referenced_study_files, _release_orphaned_study_file),
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


def _referenced_study_files(names: list[str]) -> set[str]:
    chunks = StudyChunk.objects.filter(Q(summary_name__in=names) | Q(trace_name__in=names))
    return {name for pair in chunks.values_list("summary_name", "trace_name") for name in pair}


def _release_orphaned_study_file(*, storage_name: str) -> bool:
    # A chunk records its files within seconds of storing them: older than the grace,
    # unreferenced is orphaned.
    delete_stored_file(name=storage_name)
    return True


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
