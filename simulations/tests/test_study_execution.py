"""Study execution at the service level: chunks claimed, run in the sandbox and recorded
as the worker does (study_chunk_execute), compared with fmpy called directly per case.
Two real workers: test_study_workers.py."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import fmpy
import numpy as np
import pytest
from django.utils import timezone

from simulations.models import Study, StudyCase, StudyCaseStatus, StudyChunk, StudyStatus
from simulations.services.studies import study_cancel, study_create
from simulations.services.study_execution import chunk_size, study_chunk_execute
from simulations.services.study_reconcile import reconcile_stale_study_chunks
from simulations.studies.summary import SummarySpec, summary_compute
from simulations.studies.tables import case_trace, summary_columns, summary_iter_rows

pytestmark = pytest.mark.django_db

BASE = {"fmi_type": "CoSimulation", "stop_time": 2.0, "output_interval": 0.01}


def study_run(owner, model, request: dict) -> Study:
    """Create a study and run its chunks one after the other, as tickets would."""
    study, _ = study_create(owner=owner, model=model, request=request)
    for _ in range(study.case_count + 1):
        if not StudyCase.objects.filter(study=study, status=StudyCaseStatus.QUEUED).exists():
            break
        study_chunk_execute(study_id=study.pk)
    study.refresh_from_db()
    return study


def fmpy_trace(fmu_path, values: dict) -> np.ndarray:
    return fmpy.simulate_fmu(
        str(fmu_path),
        fmi_type=BASE["fmi_type"],
        start_time=0.0,
        stop_time=BASE["stop_time"],
        output_interval=BASE["output_interval"],
        start_values=values,
    )


def assert_cases_equal_fmpy(study: Study, fmu_path) -> None:
    spec = SummarySpec.from_json(study.summary_spec)
    for case in StudyCase.objects.filter(study=study).order_by("index"):
        assert case.status == StudyCaseStatus.SUCCEEDED, (case.error_code, case.error_message)
        reference = fmpy_trace(fmu_path, case.values)
        trace = case_trace(study, case.index)
        assert trace is not None
        names = reference.dtype.names or ()
        assert trace.dtype.names == names
        assert len(trace) == len(reference) == case.result_rows
        for name in names:
            np.testing.assert_allclose(trace[name], reference[name], rtol=0, atol=1e-9)
        expected = summary_compute(trace=reference, spec=spec)
        assert case.summary.keys() == expected.keys()
        for column, value in expected.items():
            assert case.summary[column] == pytest.approx(value, abs=1e-9), column


@pytest.mark.parametrize(
    "design",
    [
        {"kind": "grid", "parameters": {"e": [0.5, 0.9], "h": {"start": 1, "stop": 2, "num": 3}}},
        {
            "kind": "cases",
            "cases": [{"e": 0.6, "h": 1}, {"e": 0.75, "h": 1.5}, {"e": 0.95, "h": 0.5}],
        },
        {
            "kind": "lhs",
            "samples": 8,
            "seed": 7,
            "parameters": {"e": {"low": 0.5, "high": 0.9}, "h": {"low": 1, "high": 3}},
        },
    ],
    ids=["grid", "cases", "lhs"],
)
def test_every_case_equals_fmpy_called_directly(user, bouncing_ball, fmu_paths, design):
    request = {"base": BASE, "design": design, "summary": ["final", "max", "mean", "integral"]}
    study = study_run(user, bouncing_ball, request)
    assert study.status == StudyStatus.SUCCEEDED
    assert study.cases_succeeded == study.case_count
    assert study.started_at is not None and study.finished_at is not None
    assert_cases_equal_fmpy(study, fmu_paths["bouncing_ball"])
    # The summary table says what the cases say, in case order.
    rows = list(summary_iter_rows(study))
    columns = summary_columns(study)
    cases = list(StudyCase.objects.filter(study=study).order_by("index"))
    assert [row[0] for row in rows] == [case.index for case in cases]
    for row, case in zip(rows, cases, strict=True):
        named = dict(zip(columns, row, strict=True))
        assert named["status"] == "succeeded"
        assert {name: named[name] for name in study.parameters} == case.values
        assert {name: named[name] for name in case.summary} == case.summary


def test_the_same_seed_gives_the_same_design(user, bouncing_ball):
    design = {
        "kind": "lhs",
        "samples": 16,
        "seed": 11,
        "parameters": {"e": {"low": 0.5, "high": 0.9}, "h": {"low": 1, "high": 3}},
    }
    request = {"base": BASE, "design": design}
    first, _ = study_create(owner=user, model=bouncing_ball, request=request)
    second, _ = study_create(owner=user, model=bouncing_ball, request=request)
    values = [
        list(
            StudyCase.objects.filter(study=study).order_by("index").values_list("values", flat=True)
        )
        for study in (first, second)
    ]
    assert values[0] == values[1]
    assert len({tuple(sorted(case.items())) for case in values[0]}) == 16
    other, _ = study_create(
        owner=user, model=bouncing_ball, request={**request, "design": {**design, "seed": 12}}
    )
    assert (
        list(
            StudyCase.objects.filter(study=other).order_by("index").values_list("values", flat=True)
        )
        != values[0]
    )


def test_failed_cases_are_listed_with_their_code_and_the_others_stand(user, fmu_paths, settings):
    from simulations.tests.factories import UploadedModelFactory

    settings.SIMULATION_DEFAULT_WALL_SECONDS = 3
    model = UploadedModelFactory(owner=user, fmu=fmu_paths["case_behaviour"])
    cases = [
        {"mode": 0, "k": 0.5},
        {"mode": 1, "k": 1.0},
        {"mode": 0, "k": 2.0},
        {"mode": 2, "k": 1.0},
    ]
    request = {"base": {"stop_time": 1.0}, "design": {"kind": "cases", "cases": cases}}
    study = study_run(user, model, request)
    assert study.status == StudyStatus.SUCCEEDED
    outcome = {
        case.index: (case.status, case.error_code) for case in StudyCase.objects.filter(study=study)
    }
    assert outcome == {
        0: ("succeeded", ""),
        1: ("failed", "model_crashed"),
        2: ("succeeded", ""),
        3: ("failed", "timeout"),
    }
    assert (study.cases_succeeded, study.cases_failed) == (2, 2)
    assert case_trace(study, 1) is None
    assert case_trace(study, 2) is not None


def test_chunks_grow_to_the_chunk_time_from_the_study_pace(user, bouncing_ball, settings):
    settings.STUDY_FIRST_CHUNK_CASES = 4
    settings.STUDY_CHUNK_SECONDS = 1000.0
    settings.STUDY_MAX_CHUNK_CASES = 50
    design = {"kind": "grid", "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 60}}}
    study, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    assert chunk_size(study) == 4
    study_chunk_execute(study_id=study.pk)
    # Four cases took far less than 1000 s: the next chunk is as large as allowed.
    assert chunk_size(study) == 50
    study_chunk_execute(study_id=study.pk)
    sizes = [chunk.cases.count() for chunk in StudyChunk.objects.filter(study=study)]
    assert sizes == [4, 50]
    # The last chunks take their share of what is left per slot working on the study
    # (6 cases; 3 chunks running elsewhere and this one: 2), but no less than a quarter
    # of the chunk the pace allows.
    for number in (101, 102, 103):
        StudyChunk.objects.create(study=study, number=number)
    settings.STUDY_MAX_CHUNK_CASES = 8
    assert chunk_size(study) == 2
    settings.STUDY_MAX_CHUNK_CASES = 20
    assert chunk_size(study) == 5


def test_a_cancelled_study_claims_nothing_more(user, bouncing_ball):
    design = {"kind": "grid", "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 20}}}
    study, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    study_chunk_execute(study_id=study.pk)
    done = StudyCase.objects.filter(study=study, status=StudyCaseStatus.SUCCEEDED).count()
    study = study_cancel(study=study)
    assert study.status == StudyStatus.CANCELLED
    assert (study.cases_succeeded, study.cases_cancelled) == (done, 20 - done)
    study_chunk_execute(study_id=study.pk)  # a late ticket does nothing
    assert StudyChunk.objects.filter(study=study).count() == 1


def test_a_chunk_whose_worker_died_gives_its_cases_back_then_fails_them(
    user, bouncing_ball, settings
):
    settings.STUDY_CASE_MAX_ATTEMPTS = 2
    design = {"kind": "grid", "parameters": {"e": [0.5, 0.6, 0.7]}}
    study, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )

    def chunk_dies() -> StudyChunk:
        # As a claim leaves it: the cases running in a chunk whose lease is already over.
        number = StudyChunk.objects.filter(study=study).count() + 1
        chunk = StudyChunk.objects.create(
            study=study, number=number, lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        cases = StudyCase.objects.filter(study=study, status=StudyCaseStatus.QUEUED)
        for case in cases:
            case.status, case.chunk, case.attempts = (
                StudyCaseStatus.RUNNING,
                chunk,
                case.attempts + 1,
            )
            case.save()
        return chunk

    chunk_dies()
    assert reconcile_stale_study_chunks() == 1
    assert StudyCase.objects.filter(study=study, status=StudyCaseStatus.QUEUED).count() == 3
    chunk_dies()
    assert reconcile_stale_study_chunks() == 1
    study.refresh_from_db()
    assert study.status == StudyStatus.SUCCEEDED  # every case has ended
    assert study.cases_failed == 3
    assert set(StudyCase.objects.filter(study=study).values_list("error_code", flat=True)) == {
        "worker_lost"
    }
    assert reconcile_stale_study_chunks() == 0


@pytest.mark.stripe
def test_cases_failed_through_the_platform_are_refunded_once_per_chunk(
    user, bouncing_ball, billing_on, settings, monkeypatch
):
    from billing.models import LedgerEntry, LedgerKind
    from billing.selectors import credit_balance
    from billing.tests.factories import LedgerEntryFactory
    from fmuengine import batch
    from testing.faults import sandbox_cannot_start

    settings.STUDY_CASE_PRICE_CENTS = 2
    settings.STUDY_FIRST_CHUNK_CASES = 4
    LedgerEntryFactory(user=user, amount_cents=100)
    design = {"kind": "grid", "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 6}}}
    study, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    assert credit_balance(user=user) == 88
    monkeypatch.setattr(batch, "run_batch", sandbox_cannot_start)
    study_chunk_execute(study_id=study.pk)  # four cases, the sandbox gone
    monkeypatch.undo()
    study_chunk_execute(study_id=study.pk)  # the other two run
    study.refresh_from_db()
    assert study.status == StudyStatus.SUCCEEDED
    assert (study.cases_succeeded, study.cases_failed) == (2, 4)
    failed = StudyCase.objects.filter(study=study, status=StudyCaseStatus.FAILED)
    assert set(failed.values_list("error_code", flat=True)) == {"sandbox_failed"}
    assert credit_balance(user=user) == 88 + 8
    assert [chunk.refunded_cents for chunk in StudyChunk.objects.filter(study=study)] == [8, 0]
    refunds = LedgerEntry.objects.filter(user=user, kind=LedgerKind.REFUND)
    assert refunds.count() == 1


@pytest.mark.stripe
@pytest.mark.django_db(transaction=True)
def test_a_cancel_stops_a_running_chunk_and_its_unstarted_cases_are_refunded(
    user, fmu_paths, billing_on, settings
):
    """The chunk sees the cancel while its second case loops: that case is cancelled (it
    ran: not refunded), the ones after it never started (refunded); every case has its
    summary row."""
    import threading

    from billing.selectors import credit_balance
    from billing.tests.factories import LedgerEntryFactory
    from simulations.tests.factories import UploadedModelFactory

    settings.STUDY_CASE_PRICE_CENTS = 2
    model = UploadedModelFactory(owner=user, fmu=fmu_paths["case_behaviour"])
    LedgerEntryFactory(user=user, amount_cents=100)
    cases = [{"mode": 2 if index == 1 else 0, "k": 1.0} for index in range(6)]
    request = {
        "base": {"stop_time": 1.0, "timeout": 60},
        "design": {"kind": "cases", "cases": cases},
    }
    study, _ = study_create(owner=user, model=model, request=request)
    assert credit_balance(user=user) == 88
    worker = threading.Thread(target=study_chunk_execute, kwargs={"study_id": study.pk})
    worker.start()
    deadline = time.monotonic() + 30
    while not StudyChunk.objects.filter(study=study).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2)  # case 0 is done, case 1 loops
    study_cancel(study=study)
    worker.join(timeout=60)
    assert not worker.is_alive()

    study.refresh_from_db()
    assert study.status == StudyStatus.CANCELLED
    ended = dict(StudyCase.objects.filter(study=study).values_list("index", "status"))
    assert ended == {0: "succeeded", **{index: "cancelled" for index in range(1, 6)}}
    assert (study.cases_succeeded, study.cases_cancelled) == (1, 5)
    assert credit_balance(user=user) == 88 + 4 * 2  # cases 2..5 never started
    rows = list(summary_iter_rows(study))
    assert [(row[0], row[1]) for row in rows] == sorted(ended.items())


@pytest.mark.stripe
def test_a_cancel_seen_before_the_first_case_charges_no_case(
    user, bouncing_ball, billing_on, settings, monkeypatch
):
    """A cancel that lands after the chunk claimed its cases but before the engine started
    the first one stops no running case: every case is refunded (the first used to be
    charged as if it had been running)."""
    from django.utils import timezone

    from billing.selectors import credit_balance
    from billing.tests.factories import LedgerEntryFactory
    from simulations.services import study_execution

    settings.STUDY_CASE_PRICE_CENTS = 2
    LedgerEntryFactory(user=user, amount_cents=100)
    design = {"kind": "grid", "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 4}}}
    study, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    assert credit_balance(user=user) == 92

    def cancelled_at_once(study_id, chunk_id):
        Study.objects.filter(pk=study_id).update(cancel_requested_at=timezone.now())
        return lambda: True

    monkeypatch.setattr(study_execution, "_cancel_checker", cancelled_at_once)
    study_chunk_execute(study_id=study.pk)

    statuses = set(StudyCase.objects.filter(study=study).values_list("status", flat=True))
    assert statuses == {StudyCaseStatus.CANCELLED}
    assert credit_balance(user=user) == 100


def test_a_study_whose_tickets_were_lost_gets_one_more(
    user, bouncing_ball, redis_broker_url, monkeypatch
):
    import functools

    import redis

    from fmugateway.celery import app as celery_app

    connection = celery_app.connection_for_write(redis_broker_url)
    monkeypatch.setattr(
        celery_app, "send_task", functools.partial(celery_app.send_task, connection=connection)
    )
    queue = redis.Redis.from_url(redis_broker_url)
    design = {"kind": "grid", "parameters": {"e": [0.5, 0.6, 0.7]}}
    lost, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    busy, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    recent, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    young, _ = study_create(
        owner=user, model=bouncing_ball, request={"base": BASE, "design": design}
    )
    long_ago = timezone.now() - timedelta(hours=1)
    Study.objects.exclude(pk=young.pk).update(created_at=long_ago)
    StudyChunk.objects.create(
        study=busy, number=1, lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    StudyChunk.objects.create(study=recent, number=1, finished_at=timezone.now())
    queue.delete("studies")  # the tickets are lost (the bindings stay)

    assert reconcile_stale_study_chunks() == 0
    assert queue.llen("studies") == 1
    message = json.loads(queue.lpop("studies"))
    assert message["headers"]["task"] == "simulations.tasks.run_study_chunk_task"
    assert str(lost.pk) in message["headers"]["argsrepr"]  # the study that lost them
    connection.release()
