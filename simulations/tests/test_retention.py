"""Stored files are deleted with their rows, and by retention: results after 30 days, unused
models after MODEL_RETENTION_DAYS when enabled; API and portal say how long results are kept."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import UserFactory
from core import storage
from simulations import services, tasks
from simulations.models import Model, Simulation, SimulationStatus
from simulations.services import retention
from simulations.tests.factories import run_with_result
from testing.api import api_client_for, uploaded_model_id

pytestmark = pytest.mark.django_db

SIMULATIONS_URL = "/api/v1/simulations"


def finished_run(owner, *, days_ago: float) -> Simulation:
    """A succeeded run with a small stored result, finished `days_ago` days ago."""
    simulation = run_with_result(owner, 10)
    simulation.finished_at = timezone.now() - timedelta(days=days_ago)
    simulation.save(update_fields=["finished_at"])
    return simulation


def uploaded_model(owner, fmu_path) -> Model:
    return Model.objects.get(pk=uploaded_model_id(api_client_for(owner), fmu_path))


# --- results --------------------------------------------------------------------------------------


def test_results_older_than_the_retention_are_deleted_and_the_run_says_so():
    owner = UserFactory()
    old, recent = finished_run(owner, days_ago=31), finished_run(owner, days_ago=29)
    old_name = old.result_name

    assert services.results_expire() == 1

    assert not default_storage.exists(old_name)
    assert default_storage.exists(recent.result_name)
    old.refresh_from_db()
    assert old.result_name == "" and old.result_deleted_at is not None
    assert old.status == SimulationStatus.SUCCEEDED  # the run itself stays, for history

    client = api_client_for(owner)
    body = client.get(f"{SIMULATIONS_URL}/{old.pk}").json()
    assert body["result_url"] is None
    assert body["result_expires_at"] is not None
    response = client.get(f"{SIMULATIONS_URL}/{old.pk}/result?format=csv")
    assert response.status_code == 410
    assert response["Content-Type"] == "application/problem+json"
    assert "kept for 30 days" in response.json()["detail"]


def test_a_kept_result_says_when_it_will_be_deleted():
    owner = UserFactory()
    run = finished_run(owner, days_ago=2)
    body = api_client_for(owner).get(f"{SIMULATIONS_URL}/{run.pk}").json()
    expected = run.finished_at + timedelta(days=30)
    assert body["result_expires_at"] == expected.isoformat().replace("+00:00", "Z")
    assert body["result_url"]


def test_the_run_page_says_how_long_results_are_kept():
    owner = UserFactory()
    run = finished_run(owner, days_ago=2)
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/portal/runs/{run.pk}/").content.decode()
    expires = (run.finished_at + timedelta(days=30)).strftime("%Y-%m-%d")
    assert "Results are kept for 30 days after their run finishes" in page
    assert f"this one until {expires}" in page


def test_result_retention_follows_the_setting(settings):
    settings.RESULT_RETENTION_DAYS = 7
    owner = UserFactory()
    run = finished_run(owner, days_ago=8)
    assert services.results_expire() == 1
    run.refresh_from_db()
    assert not run.has_result


def test_result_retention_is_idempotent():
    owner = UserFactory()
    finished_run(owner, days_ago=40)
    assert services.results_expire() == 1
    assert services.results_expire() == 0
    assert tasks.apply_storage_retention() == {"results": 0, "models": 0, "orphans": 0}


def test_a_result_whose_delete_failed_is_not_served_and_is_deleted_next_time(monkeypatch):
    owner = UserFactory()
    run = finished_run(owner, days_ago=40)
    name = run.result_name

    def storage_down(*, name: str) -> None:
        raise storage.StorageUnavailable("down")

    monkeypatch.setattr(retention, "delete_stored_file", storage_down)
    assert services.results_expire() == 0
    run.refresh_from_db()
    assert run.result_deleted_at is not None and run.result_name == name
    assert default_storage.exists(name)
    response = api_client_for(owner).get(f"{SIMULATIONS_URL}/{run.pk}/result")
    assert response.status_code == 410

    monkeypatch.undo()
    assert services.results_expire() == 1
    assert not default_storage.exists(name)


def test_the_retention_task_is_scheduled():
    schedule = django_settings.CELERY_BEAT_SCHEDULE["apply-storage-retention"]
    assert schedule["task"] == "simulations.tasks.apply_storage_retention"
    assert schedule["task"] in tasks.apply_storage_retention.app.tasks


# --- models ---------------------------------------------------------------------------------------


def test_unused_models_are_kept_by_default(fmu_paths):
    model = uploaded_model(UserFactory(), fmu_paths["bouncing_ball"])
    Model.objects.filter(pk=model.pk).update(created_at=timezone.now() - timedelta(days=400))
    assert services.models_expire() == 0
    assert Model.objects.filter(pk=model.pk).exists()


def test_models_unused_for_the_retention_are_deleted_when_enabled(
    settings, fmu_paths, django_capture_on_commit_callbacks
):
    settings.MODEL_RETENTION_ENABLED = True
    settings.MODEL_RETENTION_DAYS = 180
    owner = UserFactory()
    never_run = uploaded_model(owner, fmu_paths["bouncing_ball"])
    run_lately = uploaded_model(owner, fmu_paths["bouncing_ball3"])
    long_ago = timezone.now() - timedelta(days=181)
    Model.objects.update(created_at=long_ago)
    Model.objects.filter(pk=run_lately.pk).update(last_used_at=timezone.now() - timedelta(days=3))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.models_expire() == 1

    assert list(Model.objects.values_list("pk", flat=True)) == [run_lately.pk]
    assert not default_storage.exists(never_run.storage_name)
    assert default_storage.exists(run_lately.storage_name)


def test_a_run_marks_its_model_used_at_most_once_an_hour(fmu_paths):
    owner = UserFactory()
    model = uploaded_model(owner, fmu_paths["bouncing_ball"])
    assert model.last_used_at is None

    services.simulation_create(owner=owner, model=model, request={})
    first_use = Model.objects.get(pk=model.pk).last_used_at
    services.simulation_create(owner=owner, model=model, request={})
    unchanged = Model.objects.get(pk=model.pk).last_used_at
    Model.objects.filter(pk=model.pk).update(last_used_at=timezone.now() - timedelta(hours=2))
    services.simulation_create(owner=owner, model=Model.objects.get(pk=model.pk), request={})

    assert first_use is not None
    assert unchanged == first_use
    assert Model.objects.get(pk=model.pk).last_used_at > timezone.now() - timedelta(minutes=1)


def test_a_model_with_a_queued_run_is_not_deleted_by_retention(settings, fmu_paths):
    settings.MODEL_RETENTION_ENABLED = True
    owner = UserFactory()
    model = uploaded_model(owner, fmu_paths["bouncing_ball"])
    Simulation.objects.create(owner=owner, model=model, model_name="m", params={})
    Model.objects.update(last_used_at=timezone.now() - timedelta(days=365))
    assert services.models_expire() == 0
    assert Model.objects.filter(pk=model.pk).exists()


def test_the_models_page_says_unused_models_are_deleted_only_when_enabled(settings):
    browser = Client()
    browser.force_login(UserFactory())
    assert "no run has used" not in browser.get("/portal/models/").content.decode()
    settings.MODEL_RETENTION_ENABLED = True
    page = browser.get("/portal/models/").content.decode()
    assert "Models that no run has used for 180 days are deleted." in page


# --- files go with their rows ---------------------------------------------------------------------


def test_a_deleted_run_takes_its_result_with_it(django_capture_on_commit_callbacks):
    run = finished_run(UserFactory(), days_ago=1)
    name = run.result_name
    with django_capture_on_commit_callbacks(execute=True):
        run.delete()
    assert not default_storage.exists(name)


def test_a_deleted_account_takes_its_models_and_results_but_not_shared_files(
    fmu_paths, django_capture_on_commit_callbacks
):
    leaving, staying = UserFactory(), UserFactory()
    shared = uploaded_model(leaving, fmu_paths["bouncing_ball"])
    uploaded_model(staying, fmu_paths["bouncing_ball"])
    own = uploaded_model(leaving, fmu_paths["bouncing_ball3"])
    result_name = finished_run(leaving, days_ago=1).result_name

    with django_capture_on_commit_callbacks(execute=True):
        leaving.delete()

    assert not default_storage.exists(result_name)
    assert not default_storage.exists(own.storage_name)
    assert default_storage.exists(shared.storage_name)  # the other account still uses it


# --- files no row points at -----------------------------------------------------------------------


def backdate(name: str, hours: float) -> None:
    path = Path(default_storage.path(name))
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_stored_files_no_row_points_at_are_deleted_after_the_grace_period(fmu_paths):
    owner = UserFactory()
    model = uploaded_model(owner, fmu_paths["bouncing_ball"])
    kept_result = run_with_result(owner, 10)
    orphaned_fmu = f"fmus/ab/{'ab' * 32}.fmu"
    orphaned_result = "results/00000000-0000-0000-0000-000000000001.npy"
    recent_orphan = "results/00000000-0000-0000-0000-000000000002.npy"
    for name in (orphaned_fmu, orphaned_result, recent_orphan):
        default_storage.save(name, ContentFile(b"left behind"))
    for name in (model.storage_name, kept_result.result_name, orphaned_fmu, orphaned_result):
        backdate(name, hours=3)

    assert services.storage_orphans_delete() == 2

    assert not default_storage.exists(orphaned_fmu)
    assert not default_storage.exists(orphaned_result)
    assert default_storage.exists(recent_orphan)  # may be a run being recorded right now
    assert default_storage.exists(model.storage_name)
    assert default_storage.exists(kept_result.result_name)
    assert services.storage_orphans_delete() == 0


def test_with_storage_down_the_orphan_sweep_stops_and_deletes_nothing(monkeypatch):
    def storage_down(**_kwargs):
        raise storage.StorageUnavailable("down")
        yield  # pragma: no cover - a generator, as the real one

    monkeypatch.setattr(retention, "stored_files_older_than", storage_down)

    assert services.storage_orphans_delete() == 0


def test_an_fmu_uploaded_again_during_the_sweep_is_not_deleted(fmu_paths, monkeypatch):
    owner = UserFactory()
    model = uploaded_model(owner, fmu_paths["bouncing_ball"])
    backdate(model.storage_name, hours=3)
    # The listing saw no row for it (as if the sweep ran before the upload committed).
    monkeypatch.setattr(retention, "_referenced_fmus", lambda names: set())

    services.storage_orphans_delete()

    assert default_storage.exists(model.storage_name)
