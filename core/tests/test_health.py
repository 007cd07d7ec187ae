import os

import pytest
from django.test import Client

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


def test_healthz_answers_without_touching_the_database():
    # No django_db mark: any query here would raise "Database access not allowed".
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_when_database_broker_and_storage_answer(settings):
    settings.CELERY_BROKER_URL = REDIS_URL
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "storage": "ok",
        "sandbox": "ok",  # no worker reported that it takes no run
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_redis_is_unreachable(settings):
    settings.CELERY_BROKER_URL = CLOSED_PORT_URL
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert "broker" in body["detail"]
    assert body["checks"]["broker"].startswith("error")
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_naming_storage_when_it_is_not_writable(settings, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the media directory should be")
    settings.MEDIA_ROOT = blocked
    settings.CELERY_BROKER_URL = REDIS_URL
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "storage" in response.json()["detail"]
