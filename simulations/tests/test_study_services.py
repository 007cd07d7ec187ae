"""Study services: a study checked whole, paid once, its cases stored in order and
queued; cancel and delete. The execution of chunks: test_study_execution.py."""

from __future__ import annotations

import itertools
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import Conflict
from fmugateway.celery import app as celery_app
from simulations.models import Study, StudyCase, StudyCaseStatus, StudyChunk, StudyStatus
from simulations.services.studies import (
    STUDY_CHUNK_TASK,
    study_cancel,
    study_create,
    study_delete,
    study_quote,
)
from simulations.studies.errors import InvalidStudyRequest

pytestmark = pytest.mark.django_db

GRID = {"kind": "grid", "parameters": {"e": [0.5, 0.7], "h": {"start": 1, "stop": 2, "num": 5}}}


def grid_request(**base) -> dict:
    return {"base": {"stop_time": 1.0, **base}, "design": GRID, "summary": None}


def test_a_quote_counts_and_prices_the_cases_and_stores_nothing(user, bouncing_ball, settings):
    settings.STUDY_CASE_PRICE_CENTS = 2
    quote = study_quote(owner=user, model=bouncing_ball, request=grid_request())
    assert quote.cases == 10
    assert quote.price_cents == 20
    assert sorted(quote.parameters) == ["e", "h"]
    assert quote.design["kind"] == "grid"
    assert Study.objects.count() == 0


def test_a_study_stores_every_case_of_its_design_in_order(user, bouncing_ball):
    study, created = study_create(owner=user, model=bouncing_ball, request=grid_request())
    assert created
    assert study.status == StudyStatus.QUEUED
    assert study.case_count == 10
    assert study.base["stop_time"] == 1.0
    assert study.model_name == bouncing_ball.model_name
    cases = list(StudyCase.objects.filter(study=study).order_by("index"))
    assert [case.index for case in cases] == list(range(10))
    assert all(case.status == StudyCaseStatus.QUEUED for case in cases)
    heights = [1.0, 1.25, 1.5, 1.75, 2.0]
    wanted = {(e, h) for e, h in itertools.product([0.5, 0.7], heights)}
    assert {(case.values["e"], case.values["h"]) for case in cases} == wanted


def test_the_chunk_task_goes_to_the_studies_queue_and_runs_stay_on_the_default_one():
    router = celery_app.amqp.router
    assert router.route({}, STUDY_CHUNK_TASK, args=["x"])["queue"].name == "studies"
    default = celery_app.conf.task_default_queue
    route = router.route({}, "simulations.tasks.run_simulation_task", args=["x"])
    assert route["queue"].name == default


def test_a_study_queues_its_tickets_after_commit(
    user, bouncing_ball, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        study_create(owner=user, model=bouncing_ball, request=grid_request())
    assert len(callbacks) == 1  # one callback sends every ticket, after the rows exist


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"base": {"stop_time": -1.0}, "design": GRID}, "base.stop_time"),
        ({"base": {"start_values": {"nope": 1}}, "design": GRID}, "base.start_values"),
        ({"base": [], "design": GRID}, "base"),
        ({"base": {}}, "design"),
    ],
)
def test_a_bad_request_is_refused_naming_its_field(user, bouncing_ball, request_body, field):
    with pytest.raises(InvalidStudyRequest) as refused:
        study_create(owner=user, model=bouncing_ball, request=request_body)
    assert field in refused.value.errors
    assert refused.value.status_code == 400
    assert Study.objects.count() == 0


def test_too_many_cases_are_refused_naming_the_design(user, bouncing_ball, settings):
    settings.STUDY_MAX_CASES = 9
    with pytest.raises(InvalidStudyRequest) as refused:
        study_quote(owner=user, model=bouncing_ball, request=grid_request())
    assert "10" in refused.value.errors["design"][0]
    assert "9" in refused.value.errors["design"][0]


def test_too_many_points_in_all_are_refused(user, bouncing_ball, settings):
    # 10 cases x 1,001 points each is more than 10,000.
    settings.STUDY_MAX_OUTPUT_POINTS = 10_000
    with pytest.raises(InvalidStudyRequest) as refused:
        study_quote(owner=user, model=bouncing_ball, request=grid_request(output_interval=0.001))
    assert "output_interval" in refused.value.errors["design"][0]
    # The same cases with fewer points each fit.
    assert study_quote(owner=user, model=bouncing_ball, request=grid_request(output_interval=0.01))


def test_a_repeated_idempotency_key_returns_the_first_study(user, bouncing_ball):
    first, created = study_create(
        owner=user, model=bouncing_ball, request=grid_request(), idempotency_key="k1"
    )
    again, created_again = study_create(
        owner=user, model=bouncing_ball, request=grid_request(), idempotency_key="k1"
    )
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert Study.objects.count() == 1
    assert StudyCase.objects.count() == 10


def test_an_idempotency_key_reused_with_another_body_is_a_409(user, bouncing_ball):
    study_create(owner=user, model=bouncing_ball, request=grid_request(), idempotency_key="k2")
    with pytest.raises(Conflict) as refused:
        study_create(
            owner=user,
            model=bouncing_ball,
            request=grid_request(stop_time=2.0),
            idempotency_key="k2",
        )
    assert refused.value.code == "idempotency-key-reused"
    assert Study.objects.count() == 1


def test_ten_thousand_cases_are_stored_in_a_few_statements(user, bouncing_ball):
    request = {
        "base": {"stop_time": 1.0, "output_interval": 0.1},
        "design": {
            "kind": "grid",
            "parameters": {
                "e": {"start": 0.5, "stop": 0.9, "num": 100},
                "h": {"start": 1, "stop": 2, "num": 100},
            },
        },
    }
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        study, _ = study_create(owner=user, model=bouncing_ball, request=request)
    elapsed = time.monotonic() - started
    inserts = [query for query in queries if 'INSERT INTO "simulations_studycase"' in query["sql"]]
    assert study.case_count == 10_000
    assert StudyCase.objects.filter(study=study).count() == 10_000
    assert len(inserts) <= 10
    assert elapsed < 10, f"creating 10,000 cases took {elapsed:.1f} s"


def test_cancelling_a_queued_study_cancels_every_case_and_ends_it(user, bouncing_ball):
    study, _ = study_create(owner=user, model=bouncing_ball, request=grid_request())
    cancelled = study_cancel(study=study)
    assert cancelled.status == StudyStatus.CANCELLED
    assert cancelled.cases_cancelled == 10
    assert cancelled.finished_at is not None
    assert set(StudyCase.objects.filter(study=study).values_list("status", flat=True)) == {
        StudyCaseStatus.CANCELLED
    }
    with pytest.raises(Conflict):
        study_cancel(study=cancelled)


def test_cancelling_leaves_running_cases_to_their_chunk(user, bouncing_ball):
    """A chunk that claimed cases ends them itself (it sees cancel_requested_at); the
    study ends when they have."""
    from simulations.services.study_lifecycle import study_count_ended, study_finish_if_ended

    study, _ = study_create(owner=user, model=bouncing_ball, request=grid_request())
    chunk = StudyChunk.objects.create(study=study, number=1)
    StudyCase.objects.filter(study=study, index__lt=3).update(
        status=StudyCaseStatus.RUNNING, chunk=chunk
    )
    cancelled = study_cancel(study=study)
    assert cancelled.cancel_requested_at is not None
    assert cancelled.status == StudyStatus.QUEUED  # not finished: three cases still run
    assert cancelled.cases_cancelled == 7
    assert StudyCase.objects.filter(study=study, status=StudyCaseStatus.RUNNING).count() == 3
    # The chunk ends its three cases: the study ends, cancelled.
    StudyCase.objects.filter(study=study, status=StudyCaseStatus.RUNNING).update(
        status=StudyCaseStatus.SUCCEEDED
    )
    study_count_ended(study_id=study.pk, succeeded=3)
    assert study_finish_if_ended(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == StudyStatus.CANCELLED


def test_deleting_a_study_deletes_its_rows_and_stored_files(user, bouncing_ball):
    study, _ = study_create(owner=user, model=bouncing_ball, request=grid_request())
    names = [default_storage.save(f"studies/{study.pk}/{part}", ContentFile(b"x")) for part in "ab"]
    StudyChunk.objects.create(study=study, number=1, summary_name=names[0], trace_name=names[1])
    study_delete(study=study)
    assert not Study.objects.filter(pk=study.pk).exists()
    assert StudyCase.objects.filter(study_id=study.pk).count() == 0
    assert not any(default_storage.exists(name) for name in names)


def test_the_chunk_task_name_is_the_registered_task():
    from simulations.tasks import run_study_chunk_task

    assert run_study_chunk_task.name == STUDY_CHUNK_TASK


@pytest.mark.stripe
def test_without_credit_a_study_gets_one_402_with_its_total_and_stores_nothing(
    user, bouncing_ball, billing_on, settings
):
    from billing.services import PaymentRequired

    settings.STUDY_CASE_PRICE_CENTS = 2
    with pytest.raises(PaymentRequired) as refused:
        study_create(owner=user, model=bouncing_ball, request=grid_request())
    assert refused.value.status_code == 402
    assert refused.value.extra["cases"] == 10
    assert refused.value.extra["total_cents"] == 20
    assert Study.objects.count() == 0
    assert StudyCase.objects.count() == 0


@pytest.mark.stripe
def test_credit_pays_once_and_cancelled_cases_are_given_back(
    user, bouncing_ball, billing_on, settings
):
    from billing.selectors import credit_balance
    from billing.tests.factories import LedgerEntryFactory

    settings.STUDY_CASE_PRICE_CENTS = 2
    LedgerEntryFactory(user=user, amount_cents=100)
    study, _ = study_create(
        owner=user, model=bouncing_ball, request=grid_request(), idempotency_key="pay-once"
    )
    study_create(
        owner=user, model=bouncing_ball, request=grid_request(), idempotency_key="pay-once"
    )
    assert credit_balance(user=user) == 80  # 10 cases x 2 cents, taken once
    assert study.price_cents == 20
    # Three cases already claimed by a chunk; the seven queued ones are given back at once.
    chunk = StudyChunk.objects.create(study=study, number=1)
    StudyCase.objects.filter(study=study, index__lt=3).update(
        status=StudyCaseStatus.RUNNING, chunk=chunk
    )
    study = study_cancel(study=study)
    assert credit_balance(user=user) == 80 + 14
    assert study.charge["refunded_cents"] == 14


def test_a_model_with_a_study_still_to_run_cannot_be_deleted(user, bouncing_ball):
    from simulations.services import model_delete

    study, _ = study_create(owner=user, model=bouncing_ball, request=grid_request())
    with pytest.raises(Conflict) as refused:
        model_delete(model=bouncing_ball)
    assert refused.value.code == "model-in-use"
    study_cancel(study=study)
    model_delete(model=bouncing_ball)  # a finished study keeps its results, not its model
    study.refresh_from_db()
    assert study.model is None


def test_operators_list_filter_read_and_cancel_studies(operator_client, user, bouncing_ball):
    study, _ = study_create(owner=user, model=bouncing_ball, request=grid_request())
    StudyChunk.objects.create(study=study, number=1, worker="celery@box-7", refunded_cents=4)
    listing = operator_client.get("/admin/simulations/study/", {"status__exact": "queued"})
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1
    assert (
        operator_client.get("/admin/simulations/study/", {"q": "nobody@example.com"})
        .context["cl"]
        .result_count
        == 0
    )
    page = operator_client.get(f"/admin/simulations/study/{study.pk}/change/").content.decode()
    assert "celery@box-7" in page and "case_count" in page
    assert 'name="_save"' not in page  # read-only
    operator_client.post(
        "/admin/simulations/study/", {"action": "cancel_studies", "_selected_action": [study.pk]}
    )
    study.refresh_from_db()
    assert study.status == StudyStatus.CANCELLED


def test_deployed_workers_read_runs_before_study_chunks_and_never_billing():
    from testing.deployment import fly_config

    processes = fly_config()["processes"]
    assert " -Q celery,studies " in processes["worker"]
    assert "-Q billing " in processes["billing"]
    # Without -Q a worker reads the same queues in the same order. (The configured ones:
    # amqp.queues also holds any queue a router made on the fly in this process, e.g.
    # billing's, once a test routed a billing task.)
    assert [queue.name for queue in celery_app.conf.task_queues] == ["celery", "studies"]


def test_a_redis_broker_polls_queues_in_order():
    """kombu's default, round robin, would let a chunk go before a waiting run."""
    import os
    import subprocess
    import sys

    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['queue_order_strategy'])"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fmugateway.settings",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "priority"
