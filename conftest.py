"""Fixtures every test can use by name. testing/__init__.py maps the rest of the support."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

from accounts.tests.factories import UserFactory
from billing.tests.fake_stripe import FakeStripe, WebhookSender
from fmugateway.tests.live_server import (
    WORKER_SECRET_NAME,
    WORKER_SECRET_VALUE,
    LiveServer,
    LiveWorker,
    SharedProcesses,
    server_environment,
    start_celery_worker,
    start_gunicorn,
)

WEBHOOK_SECRET = "whsec_test_" + "5ecret" * 5

# A test that uses one of these fixtures must carry the marker (so that `-m "not live"`
# and friends never start what they mean to leave out).
MARKER_OF_FIXTURE = {
    "live_servers": "live",
    "live_workers": "live",
    "shared_processes": "live",
    "browser_on": "browser",
    "s3_server": "s3",
    "fake_stripe_server": "stripe",
}


def pytest_collection_modifyitems(config, items):
    unmarked = sorted(
        f"{item.nodeid} (uses {fixture}: mark it {marker})"
        for item in items
        for fixture, marker in MARKER_OF_FIXTURE.items()
        if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None
    )
    if unmarked:
        raise pytest.UsageError("tests without their marker:\n  " + "\n  ".join(unmarked))


# --- the test database --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    request,
    django_db_modify_db_settings_parallel_suffix,
    django_db_keepdb,
    django_db_createdb,
    django_db_blocker,
):
    """An xdist worker whose database does not exist yet copies it from a template that
    is migrated once (testing/database.py), instead of migrating its own: with --reuse-db
    (the default here) and PostgreSQL; --create-db migrates from scratch as usual."""
    from django.db import connection

    from testing.database import copy_from_template

    in_xdist_worker = hasattr(request.config, "workerinput")
    reused = django_db_keepdb and not django_db_createdb
    if in_xdist_worker and reused and connection.vendor == "postgresql":
        with django_db_blocker.unblock():
            copy_from_template(connection)


# --- test FMUs, static files, media ---------------------------------------------------------------


@pytest.fixture(scope="session")
def fmu_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test FMU (see fmuengine/tests/fmus/build.py), compiled once per test session."""
    from fmuengine.tests.fmus.build import build_all

    return build_all(tmp_path_factory.mktemp("fmus"))


def pytest_sessionstart(session):
    """Pages use whitenoise's manifest storage, which needs an up-to-date collectstatic.
    Collected once, by the main process, before any xdist worker starts: STATIC_ROOT is
    theirs to read (a collectstatic rewrites files while whitenoise lists them)."""
    if not hasattr(session.config, "workerinput"):
        call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# --- accounts and clients -------------------------------------------------------------------------


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
def api_client(user):
    """DRF's test client with a new API key of `user` (the client's `.user`)."""
    from testing.api import api_client_for

    return api_client_for(user)


@pytest.fixture
def browser(user):
    """Django's test client, logged in as `user` (the portal's pages)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator_client(db):
    """Django's test client, logged in as a staff superuser (the admin)."""
    from django.test import Client

    client = Client()
    client.force_login(UserFactory(operator=True))
    return client


# --- the fake Stripe (billing/tests/fake_stripe.py) -----------------------------------------------


@pytest.fixture(scope="session")
def fake_stripe_server():
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_stripe(fake_stripe_server) -> Iterator[FakeStripe]:
    """The fake Stripe, emptied for this test; afterwards, no call may have been unknown to it."""
    fake_stripe_server.reset()
    yield fake_stripe_server
    assert not fake_stripe_server.unknown_requests, "calls the fake Stripe does not know"


@pytest.fixture
def billing_on(settings, fake_stripe) -> FakeStripe:
    """Billing switched on in this process, with the stripe SDK pointed at the fake."""
    settings.STRIPE_SECRET_KEY = fake_stripe.secret_key
    settings.STRIPE_LIVE_MODE = False
    settings.BILLING_ENABLED = True
    settings.STRIPE_API_BASE = fake_stripe.url
    return fake_stripe


@pytest.fixture
def billing_environment(fake_stripe) -> dict[str, str]:
    """The environment that switches billing on in a live gunicorn process."""
    return {"STRIPE_SECRET_KEY": fake_stripe.secret_key, "STRIPE_API_BASE": fake_stripe.url}


@pytest.fixture
def webhook(db, billing_on) -> WebhookSender:
    """dj-stripe's real webhook endpoint, recorded by `setup_stripe_webhook --local`."""
    out = io.StringIO()
    call_command("setup_stripe_webhook", "--secret", WEBHOOK_SECRET, "--local", stdout=out)
    url = out.getvalue().strip().splitlines()[-1]
    return WebhookSender(path=urlsplit(url).path, secret=WEBHOOK_SECRET)


# --- live servers: gunicorn and Celery workers on the test database -------------------------------


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


def own_redis_url(slot: int = 0) -> str:
    """A Redis database of this test process's own, counted down from TEST_REDIS_URL's:
    slot 0 for the queue of a test's own workers (emptied by each such test), 1 and 2 for
    the shared gateways. Each xdist worker takes the next three: with TEST_REDIS_URL /15,
    gw0 has /15, /14, /13 and gw1 /12, /11, /10."""
    base = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    database = (int(base.path.strip("/") or 0) - 3 * index - slot) % 16
    return base._replace(path=f"/{database}").geturl()


@pytest.fixture
def redis_broker_url():
    """This test process's Redis database for a test's own queue (own_redis_url), emptied."""
    import redis

    url = own_redis_url()
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


# --- models ---------------------------------------------------------------------------------------


@pytest.fixture
def bouncing_ball(user, fmu_paths):
    """The bouncing ball test FMU, uploaded by `user` (stored and recorded, as the API does)."""
    from simulations.tests.factories import UploadedModelFactory

    return UploadedModelFactory(owner=user, fmu=fmu_paths["bouncing_ball"])


# --- live servers shared by the tests of this process -----------------------------------------
#
# Starting gunicorn and a Celery worker costs seconds of CPU each; most live tests need
# nothing special of them, only an account of their own. These fixtures give such tests
# processes started once per test process (per xdist worker). Four kinds, as the tests
# had them: with or without billing (against the session's fake Stripe), with a worker
# (the queue on a Redis database of their own) or without one (runs stay queued).


def _xdist_worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def shared_processes(django_db_setup, tmp_path_factory):
    processes = SharedProcesses(
        media_root=tmp_path_factory.mktemp("shared-media"),
        log_dir=tmp_path_factory.mktemp("shared-logs"),
    )
    yield processes
    processes.stop()


@dataclass
class SharedGateway:
    """A shared web process and the worker that takes its runs."""

    server: LiveServer
    worker: LiveWorker

    @property
    def url(self) -> str:
        return self.server.url


def _shared_gateway(
    processes: SharedProcesses,
    *,
    name: str,
    slot: int,
    environment: dict[str, str],
    worker_only: dict[str, str] | None = None,
) -> SharedGateway:
    import redis

    from simulations.models import WorkerStatus

    broker = {"CELERY_BROKER_URL": own_redis_url(slot)}
    node = f"{name}@fmugw-test-{_xdist_worker()}"
    starting = not any(worker.alive() for worker in processes.started_workers(node))
    if starting:
        redis.Redis.from_url(broker["CELERY_BROKER_URL"]).flushdb()
    worker = processes.worker(
        concurrency=2,
        name=node,
        # Only its start-up report: no heartbeat writing rows into other tests' database.
        SANDBOX_CHECK_INTERVAL_SECONDS="86400",
        **broker,
        **environment,
        **(worker_only or {}),
    )
    if starting:  # its start-up report lands in this test's database, emptied after it
        deadline = time.monotonic() + 30
        while not WorkerStatus.objects.filter(hostname=node).exists():
            assert time.monotonic() < deadline, f"{node} recorded no status:\n{worker.log()}"
            time.sleep(0.1)
    (server,) = processes.servers(1, **broker, **environment)
    return SharedGateway(server=server, worker=worker)


@pytest.fixture
def shared_web(shared_processes, transactional_db, settings):
    """`shared_web(count)`: gunicorn processes, billing off, no worker (runs stay queued)."""
    settings.MEDIA_ROOT = shared_processes.media_root
    return shared_processes.servers


@pytest.fixture
def shared_gateway(shared_processes, transactional_db, settings) -> SharedGateway:
    """A gunicorn process and a Celery worker (concurrency 2) on Redis, billing off. The
    worker alone has WORKER_SECRET_NAME in its environment."""
    settings.MEDIA_ROOT = shared_processes.media_root
    return _shared_gateway(
        shared_processes,
        name="gateway",
        slot=1,
        environment={},
        worker_only={WORKER_SECRET_NAME: WORKER_SECRET_VALUE},
    )


@pytest.fixture
def shared_billing_web(shared_processes, transactional_db, settings, billing_environment):
    """`shared_billing_web(count)`: gunicorn processes with billing on (the fake Stripe) and
    no rate limit to speak of, no worker (runs stay queued)."""
    settings.MEDIA_ROOT = shared_processes.media_root

    def start(count: int = 1):
        return shared_processes.servers(count, API_RATE_LIMIT="100000/min", **billing_environment)

    return start


@pytest.fixture
def shared_billing_gateway(
    shared_processes, transactional_db, settings, billing_environment
) -> SharedGateway:
    """A gunicorn process and a Celery worker (concurrency 2) on Redis, billing on."""
    settings.MEDIA_ROOT = shared_processes.media_root
    return _shared_gateway(
        shared_processes, name="billing", slot=2, environment=billing_environment
    )
