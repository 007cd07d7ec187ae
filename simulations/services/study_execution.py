"""Executing a study's chunks on Celery workers: claim, run in one sandbox process, record.

A study runs as tickets on the `studies` queue (fmugateway/celery.py): each ticket claims
the next queued cases as a chunk, runs them with the engine's run_batch (one sandbox
process for the chunk, a fresh FMU instance per case, a fresh process after a case that
crashed), writes the chunk's two columnar files (simulations.studies.tables), records
every case, gives back the cents of the cases that failed through the platform's fault
or never started because of a cancel (one give-back per chunk; simulations.run_errors
decides whose fault), and queues one more ticket while cases remain. So a study holds
no worker slot longer than one chunk, and a run waiting on the default queue takes the
next slot that frees (docs/studies.md).

A chunk is sized to about STUDY_CHUNK_SECONDS of work from the study's finished chunks
(its first one has STUDY_FIRST_CHUNK_CASES). Its worker renews its lease while it runs;
a chunk whose lease ran out (its worker died) is reconciled (study_reconcile).
A ticket that finds nothing to claim (the study ended, was cancelled or deleted, or a
duplicate delivery) ends quietly.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Max, Sum
from django.utils import timezone

from billing.charges import Charge
from billing.services import study_charge_give_back
from core.storage import delete_stored_file, open_stored_file, stored_file_local_path
from fmuengine import batch
from fmuengine.protocol import RunErrorCode
from simulations.models import Study, StudyCase, StudyCaseStatus, StudyChunk
from simulations.run_errors import AppRunErrorCode, refund_due
from simulations.services.execution import sandbox_limits, sandbox_params
from simulations.services.studies import study_cases_cents, study_tickets_send
from simulations.services.study_lifecycle import (
    study_count_ended,
    study_finish_if_ended,
    study_mark_started,
)
from simulations.studies.summary import SummarySpec, summary_compute
from simulations.studies.tables import ChunkTables, chunk_tables_store
from simulations.workers import default_worker_name, sandbox_require_ready

logger = logging.getLogger(__name__)

CANCEL_POLL_INTERVAL_SECONDS = 0.5
# Finished chunks whose pace sizes the next one.
PACE_CHUNKS = 5

_CASE_STATUS = {
    "succeeded": StudyCaseStatus.SUCCEEDED,
    "cancelled": StudyCaseStatus.CANCELLED,
}


@dataclass
class _CaseEnd:
    """What a chunk learned about one of its cases, written to its row at the chunk's end."""

    status: str
    error_code: str = ""
    message: str = ""
    summary: dict[str, float | None] = field(default_factory=dict)
    rows: int | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    started: bool = True  # a case cancelled before it ran is refunded whatever ended it

    @property
    def refunded(self) -> bool:
        if self.status == StudyCaseStatus.SUCCEEDED:
            return False
        return refund_due(self.error_code or RunErrorCode.SANDBOX_FAILED, started=self.started)


def study_chunk_execute(*, study_id: uuid.UUID | str, worker: str = "") -> None:
    """Claim the study's next queued cases as a chunk, run them, record them.

    Fail closed, like a run: below the required sandbox isolation this raises
    SandboxNotReady before the claim, and the ticket is handed back (the task retries).
    """
    study = Study.objects.filter(pk=study_id).select_related("model").first()
    if study is None or study.is_finished or study.cancel_requested_at is not None:
        return
    if not StudyCase.objects.filter(study=study, status=StudyCaseStatus.QUEUED).exists():
        return
    worker = worker or default_worker_name()
    sandbox_require_ready(worker=worker, simulation_id=f"study {study_id}")
    claimed = _chunk_claim(study=study, size=chunk_size(study), worker=worker)
    if claimed is None:
        return
    chunk, cases = claimed
    ends: dict[int, _CaseEnd] = {}
    work_dir = Path(tempfile.mkdtemp(prefix="fmugw-chunk-"))
    names = ("", "")
    try:
        tables = _chunk_run(study, chunk, cases, ends, work_dir)
        names = _chunk_store(study, chunk, cases, ends, tables)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    _chunk_record(study, chunk, cases, ends, names)


def chunk_size(study: Study) -> int:
    """Cases for about STUDY_CHUNK_SECONDS of work, at the pace of the study's last chunks.

    A chunk's time is a fixed part (the sandbox job, the model loaded, the files and rows
    written) plus its cases' own wall time; sizing by the whole time per case would count
    the fixed part once per case and keep small chunks small. So the two are measured
    apart: the next chunk gets what fits in what is left of STUDY_CHUNK_SECONDS after the
    fixed part (at least one case), and no more than its share of the cases left."""
    recent = (
        StudyChunk.objects.filter(study=study, finished_at__isnull=False, summary_name__gt="")
        .annotate(cases_count=Count("cases"), cases_wall=Sum("cases__wall_seconds"))
        .order_by("-number")[:PACE_CHUNKS]
    )
    seconds = cases_wall = 0.0
    fixed: float | None = None
    count = 0
    for chunk in recent:
        assert chunk.finished_at is not None
        elapsed = (chunk.finished_at - chunk.started_at).total_seconds()
        seconds += elapsed
        cases_wall += chunk.cases_wall or 0.0
        count += chunk.cases_count
        # The least fixed part seen: a worker's first chunk also starts its sandbox
        # server and prepares the model, once.
        own = max(0.0, elapsed - (chunk.cases_wall or 0.0))
        fixed = own if fixed is None else min(fixed, own)
    if not count or seconds <= 0 or fixed is None:
        return max(1, settings.STUDY_FIRST_CHUNK_CASES)
    per_case = max(cases_wall, seconds / 10) / count  # a case costs something, whatever said
    budget = max(settings.STUDY_CHUNK_SECONDS - fixed, settings.STUDY_CHUNK_SECONDS / 4)
    size = min(settings.STUDY_MAX_CHUNK_CASES, int(budget / per_case))
    # Towards the end, smaller: a share of what is left per slot working on the study
    # (its running chunks and this one), so that the last chunks end together rather than
    # one slot finishing a large one alone; never below a quarter of the full size, where
    # the fixed part would dominate. (Not per ticket sent: tickets outnumber the slots
    # that take them, and dividing by STUDY_PARALLEL_CHUNKS made chunks of ~0.5 s on a
    # 2-slot worker, their fixed part ~15% of the study's time.)
    queued = StudyCase.objects.filter(study=study, status=StudyCaseStatus.QUEUED).count()
    running = StudyChunk.objects.filter(study=study, finished_at__isnull=True).count()
    share = -(-queued // (running + 1))
    return max(1, min(size, max(share, size // 4), queued))


def _lease() -> timedelta:
    return timedelta(seconds=settings.SIMULATION_LEASE_SECONDS)


def _chunk_claim(
    *, study: Study, size: int, worker: str
) -> tuple[StudyChunk, list[StudyCase]] | None:
    """The next `size` queued cases, in index order, as a new chunk with a lease."""
    now = timezone.now()
    with transaction.atomic():
        # The study's row first (as cancel and reconciliation take it): chunk numbers are
        # given one claim at a time, and a cancel is seen before anything is claimed.
        locked = Study.objects.select_for_update().filter(pk=study.pk).first()
        if locked is None or locked.is_finished or locked.cancel_requested_at is not None:
            return None
        cases = list(
            StudyCase.objects.select_for_update(skip_locked=True)
            .filter(study=study, status=StudyCaseStatus.QUEUED)
            .order_by("index")[:size]
        )
        if not cases:
            return None
        number = (
            StudyChunk.objects.filter(study=study).aggregate(last=Max("number"))["last"] or 0
        ) + 1
        chunk = StudyChunk.objects.create(
            study=study, number=number, worker=worker[:255], lease_expires_at=now + _lease()
        )
        StudyCase.objects.filter(pk__in=[case.pk for case in cases]).update(
            status=StudyCaseStatus.RUNNING, chunk=chunk, attempts=F("attempts") + 1
        )
        study_mark_started(study_id=study.pk, now=now)
    return chunk, cases


def _model_file(study: Study, work_dir: Path) -> Path:
    """The model's FMU on this machine: local storage directly, object storage copied once."""
    model = study.model
    assert model is not None, "a model is kept while a study of it runs"
    path = stored_file_local_path(name=model.storage_name)
    if path is not None:
        return path
    path = work_dir / "model.fmu"
    with open_stored_file(name=model.storage_name) as stored, path.open("wb") as local:
        shutil.copyfileobj(stored, local, 1024 * 1024)
    return path


def _chunk_run(
    study: Study,
    chunk: StudyChunk,
    cases: list[StudyCase],
    ends: dict[int, _CaseEnd],
    work_dir: Path,
) -> ChunkTables:
    """Run the chunk's cases in one batch; fills `ends` and the chunk's tables."""
    spec = SummarySpec.from_json(study.summary_spec)
    model = study.model
    assert model is not None
    types = {variable["name"]: variable.get("type", "") for variable in model.variables}
    tables = ChunkTables(
        directory=work_dir,
        parameters=list(study.parameters),
        statistics=list(spec.columns()),
        parameter_types={name: types.get(name, "") for name in study.parameters},
    )
    base = sandbox_params(study.base)
    case_params = [
        {**base, "start_values": {**(base.get("start_values") or {}), **case.values}}
        for case in cases
    ]

    def on_case(outcome: Any) -> None:
        case = cases[outcome.index]
        end = _case_end(outcome, spec)
        if end.status == StudyCaseStatus.CANCELLED:
            # The case the cancel stopped while it ran is charged, as a run cancelled while
            # running; the ones it never started are refunded. The engine says which (a
            # cancel seen between two jobs stops no case: none of them is charged).
            end.started = outcome.message != batch.NOT_STARTED_MESSAGE
        ends[case.index] = end
        trace = outcome.result if end.status == StudyCaseStatus.SUCCEEDED else None
        end.rows = tables.add_case(
            index=case.index,
            status=end.status,
            error_code=end.error_code,
            values=case.values,
            statistics=end.summary,
            trace=trace,
        )
        if end.rows == 0 and trace is None:
            end.rows = None

    try:
        outcomes = batch.run_batch(
            fmu_path=_model_file(study, work_dir),
            cases=case_params,
            limits=sandbox_limits(study.base),
            model_key=model.sha256,
            on_case=on_case,
            should_cancel=_cancel_checker(study.pk, chunk.pk),
        )
        for outcome in outcomes or []:  # any case the callback did not see
            if cases[outcome.index].index not in ends:
                on_case(outcome)
    except Exception:
        logger.exception("chunk %s of study %s could not be run", chunk.number, study.pk)
    return tables


def _case_end(outcome: Any, spec: SummarySpec) -> _CaseEnd:
    status = _CASE_STATUS.get(outcome.status, StudyCaseStatus.FAILED)
    end = _CaseEnd(
        status=status,
        error_code="" if status == StudyCaseStatus.SUCCEEDED else (outcome.error_code or ""),
        message="" if status == StudyCaseStatus.SUCCEEDED else (outcome.message or ""),
        cpu_seconds=outcome.cpu_seconds,
        wall_seconds=outcome.wall_seconds,
    )
    if status == StudyCaseStatus.CANCELLED:
        end.error_code = end.error_code or RunErrorCode.CANCELLED
    elif status == StudyCaseStatus.FAILED and not end.error_code:
        end.error_code = RunErrorCode.SANDBOX_FAILED
    if status == StudyCaseStatus.SUCCEEDED:
        if outcome.result is None:
            end.status, end.error_code = StudyCaseStatus.FAILED, RunErrorCode.INVALID_RESULT
            end.message = "The case succeeded but left no result."
        else:
            end.summary = summary_compute(trace=outcome.result, spec=spec)
    return end


def _cancel_checker(study_id, chunk_id):
    """should_cancel for run_batch: polls the study's cancel request and renews the lease."""
    last_check = time.monotonic()
    cancelled = False

    def should_cancel() -> bool:
        nonlocal last_check, cancelled
        now = time.monotonic()
        if cancelled or now - last_check < CANCEL_POLL_INTERVAL_SECONDS:
            return cancelled
        last_check = now
        StudyChunk.objects.filter(pk=chunk_id, finished_at__isnull=True).update(
            lease_expires_at=timezone.now() + _lease()
        )
        cancelled = Study.objects.filter(pk=study_id, cancel_requested_at__isnull=False).exists()
        return cancelled

    return should_cancel


def _chunk_store(
    study: Study,
    chunk: StudyChunk,
    cases: list[StudyCase],
    ends: dict[int, _CaseEnd],
    tables: ChunkTables,
) -> tuple[str, str]:
    """The chunk's files in storage; on a storage failure its succeeded cases fail (ours)."""
    _unended_close(study, cases, ends, tables)
    try:
        return chunk_tables_store(study_id=study.pk, number=chunk.number, tables=tables)
    except Exception:
        logger.exception(
            "results of chunk %s of study %s could not be stored", chunk.number, study.pk
        )
        for end in ends.values():
            if end.status == StudyCaseStatus.SUCCEEDED:
                end.status = StudyCaseStatus.FAILED
                end.error_code = AppRunErrorCode.RESULT_STORAGE_FAILED
                end.message = "The result could not be stored; the case is not charged."
        return "", ""


def _unended_close(
    study: Study, cases: list[StudyCase], ends: dict[int, _CaseEnd], tables: ChunkTables
) -> None:
    """Cases the batch did not report: cancelled if the owner asked, else the sandbox's
    failure (the batch stopped: ours). Neither is charged. Each gets its row in the
    chunk's summary file, which holds every case of the chunk."""
    cancel = Study.objects.filter(pk=study.pk, cancel_requested_at__isnull=False).exists()
    for case in cases:
        if case.index in ends:
            continue
        if cancel:
            ends[case.index] = _CaseEnd(
                status=StudyCaseStatus.CANCELLED,
                error_code=RunErrorCode.CANCELLED,
                message="Cancelled before it started.",
                started=False,
            )
        else:
            ends[case.index] = _CaseEnd(
                status=StudyCaseStatus.FAILED,
                error_code=RunErrorCode.SANDBOX_FAILED,
                message="The platform could not run this case; it is not charged.",
            )
        end = ends[case.index]
        tables.add_case(
            index=case.index,
            status=end.status,
            error_code=str(end.error_code),
            values=case.values,
            statistics={},
            trace=None,
        )


def _chunk_record(
    study: Study,
    chunk: StudyChunk,
    cases: list[StudyCase],
    ends: dict[int, _CaseEnd],
    names: tuple[str, str],
) -> None:
    """Every case's end, the counters, one give-back and the chunk's files, in one
    transaction; then the next ticket (or the study's end)."""
    refunded_cases = sum(1 for end in ends.values() if end.refunded)
    with transaction.atomic():
        locked_study = Study.objects.select_for_update().filter(pk=study.pk).first()
        locked = (
            StudyChunk.objects.select_for_update()
            .filter(pk=chunk.pk, finished_at__isnull=True)
            .first()
            if locked_study is not None
            else None
        )
        if locked_study is None or locked is None:
            # Deleted meanwhile, or reconciled as lost (its cases went back to the queue):
            # what this chunk wrote is nobody's.
            transaction.on_commit(lambda: _files_delete(names))
            return
        for case in cases:
            end = ends[case.index]
            case.status = end.status
            case.error_code = str(end.error_code)
            case.error_message = end.message
            case.summary = end.summary
            case.result_rows = end.rows
            case.cpu_seconds = end.cpu_seconds
            case.wall_seconds = end.wall_seconds
        _cases_write(cases)
        cents = study_cases_cents(locked_study, refunded_cases) if refunded_cases else 0
        if cents:
            charge = study_charge_give_back(
                charge=Charge.from_json(locked_study.charge),
                cents=cents,
                reason=f"{refunded_cases} cases not run or failed through our fault",
            )
            Study.objects.filter(pk=study.pk).update(charge=charge.to_json())
        cpu = sum(end.cpu_seconds or 0.0 for end in ends.values())
        StudyChunk.objects.filter(pk=chunk.pk).update(
            finished_at=timezone.now(),
            lease_expires_at=None,
            summary_name=names[0],
            trace_name=names[1],
            cpu_seconds=cpu,
            refunded_cents=cents,
        )
        statuses = [end.status for end in ends.values()]
        study_count_ended(
            study_id=study.pk,
            succeeded=statuses.count(StudyCaseStatus.SUCCEEDED),
            failed=statuses.count(StudyCaseStatus.FAILED),
            cancelled=statuses.count(StudyCaseStatus.CANCELLED),
            cpu_seconds=cpu,
        )
        finished = study_finish_if_ended(study_id=study.pk)
        if not finished and locked_study.cancel_requested_at is None:
            transaction.on_commit(lambda: study_tickets_send(study_id=study.pk, count=1))
    if refunded_cases:
        logger.warning(
            "study %s chunk %s: %d cases not run or failed through our fault, %d cents given back",
            study.pk,
            chunk.number,
            refunded_cases,
            cents,
        )


_CASE_END_FIELDS = (
    "status",
    "error_code",
    "error_message",
    "summary",
    "result_rows",
    "cpu_seconds",
    "wall_seconds",
)


def _cases_write(cases: list[StudyCase]) -> None:
    """Every case's end in one statement per 500 cases.

    Django's bulk_update writes a CASE WHEN per field and row: for a chunk of 100 cases
    it cost half a second of the worker's CPU, a third of the chunk. On PostgreSQL one
    UPDATE ... FROM (VALUES ...) does the same in milliseconds.
    """
    if connection.vendor != "postgresql":
        StudyCase.objects.bulk_update(cases, list(_CASE_END_FIELDS), batch_size=500)
        return
    table = StudyCase._meta.db_table
    for start in range(0, len(cases), 500):
        part = cases[start : start + 500]
        rows = ", ".join(
            [
                "(%s::bigint, %s, %s, %s, %s::jsonb, %s::integer, %s::double precision, "
                "%s::double precision)"
            ]
            * len(part)
        )
        values: list[Any] = []
        for case in part:
            values += [
                case.pk,
                case.status,
                case.error_code,
                case.error_message,
                json.dumps(case.summary),
                case.result_rows,
                case.cpu_seconds,
                case.wall_seconds,
            ]
        columns = ", ".join(_CASE_END_FIELDS)
        assignments = ", ".join(f"{name} = v.{name}" for name in _CASE_END_FIELDS)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS c SET {assignments} "  # noqa: S608 (names are ours)
                f"FROM (VALUES {rows}) AS v(id, {columns}) WHERE c.id = v.id",
                values,
            )


def _files_delete(names: tuple[str, str]) -> None:
    for name in names:
        if name:
            try:
                delete_stored_file(name=name)
            except Exception:
                logger.exception("could not delete %s (the retention pass will)", name)
