import pytest
from django.conf import settings
from django.core.management import call_command

from accounts.tests.factories import UserFactory
from fmugateway.tests.live_server import server_environment, start_gunicorn


@pytest.fixture(scope="session", autouse=True)
def collected_static():
    """Pages use whitenoise's manifest storage, which needs collectstatic once."""
    if not (settings.STATIC_ROOT / "staticfiles.json").exists():
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
