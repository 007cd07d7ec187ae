from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.tests.factories import UserFactory
from fmugateway.tests.live_server import (
    server_environment,
    start_celery_worker,
    start_gunicorn,
)


@pytest.fixture(scope="session")
def fmu_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test FMU (see fmuengine/tests/fmus/build.py), compiled once per test session."""
    from fmuengine.tests.fmus.build import build_all

    return build_all(tmp_path_factory.mktemp("fmus"))


@pytest.fixture(scope="session", autouse=True)
def collected_static():
    """Pages use whitenoise's manifest storage, which needs an up-to-date collectstatic."""
    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def api_key_for(db):
    """Make a key for a user; returns (ApiKey, plaintext)."""
    from accounts.services import api_key_create

    def make(user, **kwargs):
        return api_key_create(user=user, **kwargs)

    return make


@pytest.fixture
def api_client(user, api_key_for):
    from rest_framework.test import APIClient

    _api_key, plaintext = api_key_for(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.user = user
    return client


@pytest.fixture
def live_servers(transactional_db):
    """Start gunicorn processes on this test's PostgreSQL database; stopped afterwards."""
    started = []

    def start(count: int = 1, **environment: str):
        servers = [
            start_gunicorn(environment=server_environment(**environment)) for _ in range(count)
        ]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_broker_url():
    """The suite's own Redis database (TEST_REDIS_URL) for queue tests, emptied before use."""
    import os

    import redis

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def live_workers(transactional_db, tmp_path):
    """Start real Celery worker processes on this test's database; stopped afterwards."""
    started = []

    def start(
        *,
        concurrency: int = 2,
        name: str | None = None,
        command_prefix: tuple[str, ...] = (),
        **environment: str,
    ):
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = start_celery_worker(
            environment=server_environment(**environment),
            log_path=log_path,
            concurrency=concurrency,
            name=name,
            command_prefix=command_prefix,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
