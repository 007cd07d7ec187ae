"""Writes for studies as callers ask for them: quote, create (paid once, idempotent),
cancel, delete.

A study is checked whole before it is paid for: the base request as a run's
(simulation_params, once: per case only the design's start values change), the design
(simulations.studies.designs) and the summary (simulations.studies.summary), then the
service's limits (cases, points in all). Creating it takes one charge for every case in
the same transaction as the rows, so a study that is not created is not charged, and
queues a few tickets for its chunks after commit (simulations.services.study_execution
runs them). Money given back later (cancelled or platform-failed cases) goes through
billing's study_charge_give_back, by the cents of the cases concerned.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.charges import Charge
from billing.services import (
    PaymentRequired,
    study_charge_give_back,
    study_charge_link,
    study_charge_take,
    study_payment_request,
    study_price_cents,
)
from core.errors import Conflict
from core.problems import ProblemCode
from core.storage import delete_stored_file
from fmuengine.protocol import RunErrorCode
from simulations.models import Model, Study, StudyCase, StudyCaseStatus, StudyStatus
from simulations.params import InvalidSimulationRequest, simulation_params
from simulations.services.runs import request_fingerprint
from simulations.services.study_lifecycle import study_count_ended, study_finish_if_ended
from simulations.studies.designs import (
    Design,
    design_build,
    settable_variables,
)
from simulations.studies.errors import InvalidStudyRequest
from simulations.studies.summary import SummarySpec, summary_spec_parse

logger = logging.getLogger(__name__)

# The name simulations.tasks registers run_study_chunk_task under (a test pins the two).
STUDY_CHUNK_TASK = "simulations.tasks.run_study_chunk_task"

# Cases inserted per INSERT statement: 10,000 cases in a handful of round trips.
CASE_INSERT_BATCH = 2000

# fmpy records at most about this many points when no output_interval is given (it
# doubles its automatic interval until the run fits).
DEFAULT_POINTS_PER_CASE = 1001


@dataclass(frozen=True)
class StudyQuote:
    """What a study request would be: its cases, price, normalised design and summary."""

    cases: int
    price_cents: int
    design: dict
    parameters: list[str]
    summary: dict


@dataclass(frozen=True)
class _CheckedStudy:
    params: dict
    design: Design
    summary: SummarySpec


def study_quote(*, owner, model: Model, request: dict) -> StudyQuote:
    """`?dry_run=true`: everything a create checks, and the price; nothing is charged."""
    checked = _study_check(model=model, request=request)
    return _quote_of(checked)


def _quote_of(checked: _CheckedStudy) -> StudyQuote:
    cases = len(checked.design.cases)
    return StudyQuote(
        cases=cases,
        price_cents=study_price_cents(cases=cases),
        design=checked.design.to_json(),
        parameters=list(checked.design.parameters),
        summary=checked.summary.to_json(),
    )


def _study_check(*, model: Model, request: dict) -> _CheckedStudy:
    """The request checked as a whole, or InvalidStudyRequest naming every bad field."""
    if not isinstance(request, dict):
        raise InvalidStudyRequest({"": ["A study request is a JSON object."]})
    base = request.get("base", {})
    base = {} if base is None else base
    if not isinstance(base, dict):
        raise InvalidStudyRequest({"base": ["base is an object: the fields of a run request."]})
    if "model" in base:
        raise InvalidStudyRequest({"base.model": ["The model is named once, outside base."]})
    try:
        params = simulation_params(model=model, request=base)
    except InvalidSimulationRequest as invalid:
        raise InvalidStudyRequest(
            {f"base.{field}": messages for field, messages in invalid.errors.items()}
        ) from None

    spec = request.get("design")
    if not isinstance(spec, dict):
        raise InvalidStudyRequest({"design": ["A study needs a design (an object with a kind)."]})
    # Counted before anything is built: a 10^9-case grid is refused without a 10^9 list.
    design = design_build(
        spec=spec, variables=settable_variables(model), max_cases=settings.STUDY_MAX_CASES
    )
    if not design.cases:
        raise InvalidStudyRequest({"design": ["This design has no case."]})

    points = len(design.cases) * _points_per_case(params)
    if points > settings.STUDY_MAX_OUTPUT_POINTS:
        raise InvalidStudyRequest(
            {
                "design": [
                    f"{len(design.cases):,} cases of about {_points_per_case(params):,} output "
                    f"points each make {points:,}; a study may record at most "
                    f"{settings.STUDY_MAX_OUTPUT_POINTS:,}. Use fewer cases or a larger "
                    "base.output_interval."
                ]
            }
        )
    summary = summary_spec_parse(
        spec=request.get("summary"), outputs=_recorded_outputs(model, params)
    )
    return _CheckedStudy(params=params, design=design, summary=summary)


def _points_per_case(params: dict) -> int:
    interval = params.get("output_interval")
    if not interval:
        return DEFAULT_POINTS_PER_CASE
    return math.ceil((params["stop_time"] - params["start_time"]) / interval) + 1


def _recorded_outputs(model: Model, params: dict) -> list[str]:
    """The variables each case's trace records (besides time): the request's `output`,
    else the model's outputs, as fmpy records them by default."""
    if params.get("output"):
        return list(params["output"])
    return [
        variable["name"] for variable in model.variables if variable.get("causality") == "output"
    ]


def study_create(
    *,
    owner,
    model: Model,
    request: dict,
    idempotency_key: str | None = None,
    payment_token: str | None = None,
) -> tuple[Study, bool]:
    """Check, pay for (once, every case) and queue a study; returns (study, created).

    A repeated Idempotency-Key with the same request returns the first study and charges
    once; with another request it is a 409.
    """
    fingerprint = request_fingerprint(model_id=f"study:{model.pk}", request=request)
    if idempotency_key:
        existing = _study_replayed(owner, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    checked = _study_check(model=model, request=request)
    quote = _quote_of(checked)
    try:
        with transaction.atomic():
            charge = study_charge_take(user=owner, cases=quote.cases, payment_token=payment_token)
            study = Study.objects.create(
                owner=owner,
                model=model,
                model_name=model.model_name,
                base=checked.params,
                design=quote.design,
                parameters=quote.parameters,
                summary_spec=quote.summary,
                case_count=quote.cases,
                price_cents=quote.price_cents,
                charge=charge.to_json(),
                idempotency_key=idempotency_key or None,
                request_fingerprint=fingerprint,
            )
            StudyCase.objects.bulk_create(
                (
                    StudyCase(study=study, index=index, values=values)
                    for index, values in enumerate(checked.design.cases)
                ),
                batch_size=CASE_INSERT_BATCH,
            )
            study_charge_link(charge=charge, study=study)
            tickets = _first_tickets(quote.cases)
            transaction.on_commit(lambda: _enqueue(study.pk, tickets))
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first.
        existing = _study_replayed(owner, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    except PaymentRequired as refused:
        existing = _study_replayed(owner, idempotency_key, fingerprint) if idempotency_key else None
        if existing is not None:
            return existing, False
        # The rolled-back transaction took nothing; the 402's Checkout Session is made now.
        raise study_payment_request(user=owner, refused=refused, cases=quote.cases) from None
    return study, True


def _study_replayed(owner, idempotency_key: str, fingerprint: str) -> Study | None:
    existing = Study.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was used for a different request; use a new key.",
            code=ProblemCode.IDEMPOTENCY_KEY_REUSED,
        )
    return existing


def _first_tickets(cases: int) -> int:
    """Tickets queued at first: as many chunks as may run at once (each ticket queues its
    successor while cases remain), and no more than the first chunks need."""
    return max(1, min(settings.STUDY_PARALLEL_CHUNKS, math.ceil(cases / _first_chunk_cases())))


def _first_chunk_cases() -> int:
    return max(1, settings.STUDY_FIRST_CHUNK_CASES)


def _enqueue(study_id: uuid.UUID, tickets: int) -> None:
    # By name, as every service enqueues; routed to the `studies` queue (celery.py).
    for _ in range(tickets):
        current_app.send_task(STUDY_CHUNK_TASK, args=[str(study_id)])


def study_tickets_send(*, study_id: uuid.UUID | str, count: int) -> None:
    """Queue `count` more tickets (after commit), if cases are still queued: a chunk's
    successor, or reconciliation's for requeued cases or lost tickets."""
    if StudyCase.objects.filter(study_id=study_id, status=StudyCaseStatus.QUEUED).exists():
        _enqueue(uuid.UUID(str(study_id)), count)


def study_cases_cents(study: Study, cases: int) -> int:
    """What `cases` of this study were paid: its price shared evenly between its cases."""
    if not study.case_count:
        return 0
    return study.price_cents * cases // study.case_count


def study_cancel(*, study: Study) -> Study:
    """Cancel a study: its queued cases at once (refunded), its running ones by their
    chunk, which sees cancel_requested_at, stops and ends (and refunds) what it had not
    run. Cancelling a finished study is a 409."""
    now = timezone.now()
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(pk=study.pk)
        if locked.is_finished:
            raise Conflict(f"The study has already finished ({locked.status}).")
        if locked.cancel_requested_at is None:
            locked.cancel_requested_at = now
            Study.objects.filter(pk=locked.pk).update(cancel_requested_at=now)
        # Conditional: a case a chunk claimed meanwhile is running, and left to the chunk.
        cancelled = StudyCase.objects.filter(study=locked, status=StudyCaseStatus.QUEUED).update(
            status=StudyCaseStatus.CANCELLED,
            error_code=RunErrorCode.CANCELLED,
            error_message="Cancelled before it started.",
        )
        if cancelled:
            charge = study_charge_give_back(
                charge=Charge.from_json(locked.charge),
                cents=study_cases_cents(locked, cancelled),
                reason=f"{cancelled} cases cancelled before they started",
            )
            Study.objects.filter(pk=locked.pk).update(charge=charge.to_json())
            study_count_ended(study_id=locked.pk, cancelled=cancelled)
        study_finish_if_ended(study_id=locked.pk)
    locked.refresh_from_db()
    return locked


def study_delete(*, study: Study) -> None:
    """Cancel the study if it runs, then delete its stored files and its rows.

    A chunk still running when the rows go finds its study gone when it ends, and deletes
    the files it has just written (study_execution).
    """
    if study.status not in (StudyStatus.SUCCEEDED, StudyStatus.CANCELLED):
        with contextlib.suppress(Conflict):  # it finished meanwhile
            study_cancel(study=study)
    names = [
        name
        for pair in study.chunks.values_list("summary_name", "trace_name")
        for name in pair
        if name
    ]
    for name in names:
        delete_stored_file(name=name)  # a storage outage is a 503 before any row goes
    Study.objects.filter(pk=study.pk).delete()
