"""Reads of studies and their cases, always scoped to their owner (another's id is simply
not found), for the API and the portal alike."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from simulations.models import Study, StudyCase, StudyCaseStatus


def studies_for_owner(*, owner) -> QuerySet[Study]:
    """The owner's studies, newest first, each annotated with `cases_running`.

    Only the running count needs the cases table: a study keeps counters of its ended
    cases, and the queued ones are what is left. A subquery per study reads the
    (study, status, index) index alone, so a page of studies of 10,000 cases each stays
    cheap; a join with a GROUP BY would read every case of every study on the page.
    """
    running = (
        StudyCase.objects.filter(study=OuterRef("pk"), status=StudyCaseStatus.RUNNING)
        .order_by()
        .values("study")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Study.objects.filter(owner=owner).annotate(
        cases_running=Coalesce(Subquery(running, output_field=IntegerField()), Value(0))
    )


def study_for_owner(*, owner, study_id: uuid.UUID | str) -> Study:
    """Raises Study.DoesNotExist for another account's study, as for a missing one."""
    return studies_for_owner(owner=owner).get(pk=study_id)


def study_cases(*, study: Study, status: str | None = None) -> QuerySet[StudyCase]:
    """A study's cases in index order, optionally only those in one status."""
    cases = StudyCase.objects.filter(study=study).order_by("index")
    if status:
        cases = cases.filter(status=status)
    return cases


def study_case_for_owner(*, owner, study_id: uuid.UUID | str, index: int) -> StudyCase:
    """One case of one of the owner's studies; StudyCase.DoesNotExist otherwise (another
    account's study, a missing study, or an index past its last case)."""
    return StudyCase.objects.select_related("study").get(
        study__owner=owner, study_id=study_id, index=index
    )


@dataclass(frozen=True)
class StudyCaseCounts:
    """How many of a study's cases are in each status (they add up to `total`)."""

    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "queued": self.queued,
            "running": self.running,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }


def study_case_counts(*, study: Study) -> StudyCaseCounts:
    """The counts from the study's counters; `running` from the annotation of
    studies_for_owner when the study came from there, else one indexed count."""
    running = getattr(study, "cases_running", None)
    if running is None:
        running = StudyCase.objects.filter(study=study, status=StudyCaseStatus.RUNNING).count()
    ended = study.cases_succeeded + study.cases_failed + study.cases_cancelled
    return StudyCaseCounts(
        total=study.case_count,
        queued=max(0, study.case_count - ended - running),
        running=running,
        succeeded=study.cases_succeeded,
        failed=study.cases_failed,
        cancelled=study.cases_cancelled,
    )
