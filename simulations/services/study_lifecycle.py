"""A study's state machine and its counters: every change of `Study.status` is here.

    from              to                      function              called by
    (none)            queued                  (an INSERT)           studies: study_create
    queued            running                 study_mark_started    execution: a chunk's claim
    queued, running   succeeded or cancelled  study_finish_if_ended execution: a chunk's end;
                                                                    studies: study_cancel;
                                                                    reconciliation

Cases change status in bulk, by their chunk (claim, end) or by a cancel (queued ->
cancelled); `study_count_ended` adds what ended to the study's counters with F()
expressions, so concurrent chunks never lose each other's counts. A study ends when its
counters say every case has ended: succeeded, or cancelled when its owner asked for it
(the cases that had ended keep their results either way). Each transition is one
conditional UPDATE naming the states it leaves, so of two chunks ending the last cases
at once exactly one finishes the study.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import F
from django.utils import timezone

from simulations.models import Study, StudyStatus


def study_mark_started(*, study_id: uuid.UUID | str, now: datetime) -> None:
    """queued -> running, on the claim of its first chunk (started_at kept from then on)."""
    Study.objects.filter(pk=study_id, status=StudyStatus.QUEUED).update(
        status=StudyStatus.RUNNING, started_at=now
    )


def study_count_ended(
    *,
    study_id: uuid.UUID | str,
    succeeded: int = 0,
    failed: int = 0,
    cancelled: int = 0,
    cpu_seconds: float = 0.0,
) -> None:
    """Add ended cases (and the CPU they used) to the study's counters."""
    if not (succeeded or failed or cancelled or cpu_seconds):
        return
    Study.objects.filter(pk=study_id).update(
        cases_succeeded=F("cases_succeeded") + succeeded,
        cases_failed=F("cases_failed") + failed,
        cases_cancelled=F("cases_cancelled") + cancelled,
        cpu_seconds=F("cpu_seconds") + cpu_seconds,
    )


def study_finish_if_ended(*, study_id: uuid.UUID | str) -> bool:
    """queued or running -> succeeded (or cancelled, if its owner asked) once every case
    has ended; False while cases remain, or when someone else finished it first."""
    now = timezone.now()
    ended = F("cases_succeeded") + F("cases_failed") + F("cases_cancelled")
    unfinished = Study.objects.filter(
        pk=study_id, status__in=[StudyStatus.QUEUED, StudyStatus.RUNNING], case_count__lte=ended
    )
    finished = unfinished.filter(cancel_requested_at__isnull=True).update(
        status=StudyStatus.SUCCEEDED, finished_at=now
    )
    finished += unfinished.filter(cancel_requested_at__isnull=False).update(
        status=StudyStatus.CANCELLED, finished_at=now
    )
    return bool(finished)
