"""Studies on real Celery workers (Redis, PostgreSQL, the sandbox): chunks spread over
two workers, hostile cases failing alone, and single runs not starved by a study."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import pytest

from fmugateway.celery import app as celery_app
from simulations.models import (
    Simulation,
    SimulationStatus,
    Study,
    StudyCase,
    StudyCaseStatus,
    StudyChunk,
    StudyStatus,
)
from simulations.services import simulation_create, study_cancel, study_create
from simulations.tests.factories import UploadedModelFactory

pytestmark = pytest.mark.live

# Only their start-up sandbox report: no heartbeat rows written into other tests' database.
WORKER_ENVIRONMENT = {"SANDBOX_CHECK_INTERVAL_SECONDS": "86400"}


@pytest.fixture
def broker(redis_broker_url, monkeypatch) -> Iterator[str]:
    """This test's services publish to the Redis queue its workers read (the process's
    own broker is the embedded filesystem one)."""
    connection = celery_app.connection_for_write(redis_broker_url)
    monkeypatch.setattr(
        celery_app, "send_task", functools.partial(celery_app.send_task, connection=connection)
    )
    yield redis_broker_url
    connection.release()


def start_workers(live_workers, broker: str, count: int = 2, **environment: str) -> list:
    return [
        live_workers(
            concurrency=2,
            name=f"study{number}@fmugw-test",
            CELERY_BROKER_URL=broker,
            **WORKER_ENVIRONMENT,
            **environment,
        )
        for number in range(count)
    ]


def wait_for_study(study: Study, timeout: float, workers) -> Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study.refresh_from_db()
        if study.is_finished:
            return study
        time.sleep(0.5)
    logs = "\n".join(worker.log()[-3000:] for worker in workers)
    raise AssertionError(f"study still {study.status} ({study.cases_ended} ended):\n{logs}")


def test_a_500_case_study_with_three_hostile_cases_on_two_workers(
    user, fmu_paths, live_workers, broker
):
    workers = start_workers(live_workers, broker, SIMULATION_MEMORY_BYTES=str(256 * 1024**2))
    model = UploadedModelFactory(owner=user, fmu=fmu_paths["case_behaviour"])
    hostile = {100: (1, "model_crashed"), 250: (2, "timeout"), 400: (3, "memory_limit")}
    cases = [
        {"mode": hostile[index][0] if index in hostile else 0, "k": 0.5 + index / 500}
        for index in range(500)
    ]
    request = {
        "base": {"stop_time": 1.0, "output_interval": 0.1, "timeout": 3},
        "design": {"kind": "cases", "cases": cases},
    }
    study, _ = study_create(owner=user, model=model, request=request)
    study = wait_for_study(study, 300, workers)

    assert study.status == StudyStatus.SUCCEEDED
    failed = {
        case.index: case.error_code
        for case in StudyCase.objects.filter(study=study, status=StudyCaseStatus.FAILED)
    }
    assert failed == {index: code for index, (_mode, code) in hostile.items()}
    assert study.cases_succeeded == 497
    assert StudyCase.objects.filter(study=study, status=StudyCaseStatus.SUCCEEDED).count() == 497
    assert all(worker.alive() for worker in workers)
    chunk_workers = set(StudyChunk.objects.filter(study=study).values_list("worker", flat=True))
    assert chunk_workers == {"study0@fmugw-test", "study1@fmugw-test"}


def test_a_single_run_starts_within_5_s_while_a_study_fills_every_slot(
    user, fmu_paths, live_workers, broker, settings
):
    workers = start_workers(live_workers, broker)
    model = UploadedModelFactory(owner=user, fmu=fmu_paths["bouncing_ball"])
    design = {
        "kind": "grid",
        "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 100}, "h": [1, 2, 3, 4, 5]},
    }
    request = {"base": {"stop_time": 3.0, "output_interval": 0.001}, "design": design}
    study, _ = study_create(owner=user, model=model, request=request)
    # Every slot (2 workers x 2) busy with a chunk, and more tickets waiting.
    deadline = time.monotonic() + 60
    while StudyChunk.objects.filter(study=study, finished_at__isnull=True).count() < 4:
        assert time.monotonic() < deadline, "the study never filled the four slots"
        time.sleep(0.1)
    submitted = time.monotonic()
    run, _ = simulation_create(owner=user, model=model, request={"stop_time": 1.0})
    while True:
        run.refresh_from_db()
        if run.status != SimulationStatus.QUEUED:
            break
        assert time.monotonic() - submitted < 5, "the run waited more than 5 s for a slot"
        time.sleep(0.05)
    waited = time.monotonic() - submitted
    study.refresh_from_db()
    assert not study.is_finished, "the study ended before the run: it filled no slot"
    assert waited < 5
    deadline = time.monotonic() + 60
    while not Simulation.objects.get(pk=run.pk).is_finished:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert Simulation.objects.get(pk=run.pk).status == SimulationStatus.SUCCEEDED
    study_cancel(study=study)
    wait_for_study(study, 60, workers)
    assert all(worker.alive() for worker in workers)


def test_a_worker_killed_mid_chunk_loses_no_case(user, fmu_paths, live_workers, broker):
    """Its chunks' leases run out; reconciliation (the beat's task, called here) puts their
    cases back in the queue with tickets, and the other worker runs them."""
    import os
    import signal

    from simulations.services import reconcile_stale_study_chunks

    doomed, survivor = start_workers(live_workers, broker, SIMULATION_LEASE_SECONDS="5")
    model = UploadedModelFactory(owner=user, fmu=fmu_paths["bouncing_ball"])
    design = {"kind": "grid", "parameters": {"e": {"start": 0.5, "stop": 0.9, "num": 300}}}
    request = {"base": {"stop_time": 3.0}, "design": design}
    study, _ = study_create(owner=user, model=model, request=request)
    deadline = time.monotonic() + 60
    running = StudyChunk.objects.filter(study=study, finished_at__isnull=True)
    while not running.filter(worker="study0@fmugw-test").exists():
        assert time.monotonic() < deadline, "no chunk ever ran on the first worker"
        time.sleep(0.05)
    os.killpg(doomed.process.pid, signal.SIGKILL)  # the worker and its pool, at once
    doomed.process.wait()

    deadline = time.monotonic() + 180
    while not study.is_finished:
        assert time.monotonic() < deadline, f"study still {study.status}:\n{survivor.log()[-3000:]}"
        reconcile_stale_study_chunks()
        time.sleep(1)
        study.refresh_from_db()
    assert study.status == StudyStatus.SUCCEEDED
    assert study.cases_succeeded == 300
    lost = StudyChunk.objects.filter(study=study, worker="study0@fmugw-test", summary_name="")
    assert lost.exclude(finished_at=None).exists()  # reconciled, not recorded
    assert StudyCase.objects.filter(study=study, attempts__gt=1).exists()
    assert survivor.alive()
