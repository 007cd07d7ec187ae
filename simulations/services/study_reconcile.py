"""Chunks whose worker died, and studies whose tickets were lost: the beat's pass
(every minute, and at each worker start) that keeps every study moving.

A chunk's worker renews its lease while the chunk runs (study_execution). One whose
lease ran out is reconciled here: its unended cases go back to the queue, with tickets,
up to STUDY_CASE_MAX_ATTEMPTS claims per case, then fail as worker_lost (refunded: the
platform's fault). The chunk is marked ended, so if its worker was only slow, its late
record finds that and throws its files away: each case is recorded once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from billing.charges import Charge
from billing.services import study_charge_give_back
from simulations.models import Study, StudyCase, StudyCaseStatus, StudyChunk, StudyStatus
from simulations.run_errors import AppRunErrorCode
from simulations.services.studies import study_cases_cents, study_tickets_send
from simulations.services.study_lifecycle import study_count_ended, study_finish_if_ended

logger = logging.getLogger(__name__)


def reconcile_stale_study_chunks() -> int:
    """Chunks whose worker stopped renewing their lease: their unended cases go back to
    the queue (and tickets with them), or fail as worker_lost (refunded) once they have
    been claimed STUDY_CASE_MAX_ATTEMPTS times. Returns the chunks reconciled."""
    stale = list(
        StudyChunk.objects.filter(
            finished_at__isnull=True, lease_expires_at__lt=timezone.now()
        ).values_list("pk", "study_id")
    )
    for chunk_id, study_id in stale:
        _chunk_reconcile(chunk_id, study_id)
    _stalled_studies_wake(now=timezone.now())
    return len(stale)


def _stalled_studies_wake(*, now: datetime) -> int:
    """One more ticket for each study that has queued cases but no chunk running and none
    claimed or ended for STUDY_STALLED_SECONDS: its tickets were lost (a broker flushed
    or failed over). A ticket still waiting behind other work only means one ticket too
    many, which ends quietly or runs a chunk."""
    quiet_since = now - timedelta(seconds=settings.STUDY_STALLED_SECONDS)
    chunks = StudyChunk.objects.filter(study=OuterRef("pk"))
    stalled = list(
        Study.objects.filter(
            status__in=[StudyStatus.QUEUED, StudyStatus.RUNNING],
            cancel_requested_at__isnull=True,
            created_at__lt=quiet_since,
        )
        .filter(
            Exists(StudyCase.objects.filter(study=OuterRef("pk"), status=StudyCaseStatus.QUEUED))
        )
        .exclude(Exists(chunks.filter(finished_at__isnull=True)))
        .exclude(Exists(chunks.filter(finished_at__gte=quiet_since)))
        .values_list("pk", flat=True)
    )
    for study_id in stalled:
        logger.warning("study %s had queued cases and no ticket at work: one more sent", study_id)
        study_tickets_send(study_id=study_id, count=1)
    return len(stalled)


def _chunk_reconcile(chunk_id: int, study_id) -> None:
    with transaction.atomic():
        study = Study.objects.select_for_update().filter(pk=study_id).first()
        chunk = (
            StudyChunk.objects.select_for_update()
            .filter(pk=chunk_id, finished_at__isnull=True, lease_expires_at__lt=timezone.now())
            .first()
        )
        if study is None or chunk is None:
            return
        running = StudyCase.objects.filter(chunk=chunk, status=StudyCaseStatus.RUNNING)
        cancel = study.cancel_requested_at is not None
        lost = running
        if not cancel:
            lost = running.filter(attempts__gte=settings.STUDY_CASE_MAX_ATTEMPTS)
            requeued = running.filter(attempts__lt=settings.STUDY_CASE_MAX_ATTEMPTS).update(
                status=StudyCaseStatus.QUEUED, chunk=None
            )
        else:
            requeued = 0
        failed = lost.update(
            status=StudyCaseStatus.FAILED,
            error_code=AppRunErrorCode.WORKER_LOST,
            error_message="The worker running this case stopped; it is not charged.",
        )
        if failed:
            charge = study_charge_give_back(
                charge=Charge.from_json(study.charge),
                cents=study_cases_cents(study, failed),
                reason=f"{failed} cases lost with their worker",
            )
            Study.objects.filter(pk=study.pk).update(charge=charge.to_json())
            study_count_ended(study_id=study.pk, failed=failed)
        StudyChunk.objects.filter(pk=chunk.pk).update(
            finished_at=timezone.now(),
            lease_expires_at=None,
            refunded_cents=study_cases_cents(study, failed),
        )
        study_finish_if_ended(study_id=study.pk)
        if requeued:
            tickets = min(settings.STUDY_PARALLEL_CHUNKS, requeued)
            transaction.on_commit(lambda: study_tickets_send(study_id=study.pk, count=tickets))
    logger.warning(
        "study %s chunk %s lost its worker: %d cases queued again, %d failed (refunded)",
        study_id,
        chunk_id,
        requeued,
        failed,
    )
