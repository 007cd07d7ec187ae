"""Billing tests: a local fake Stripe, billing switched on, a signed-webhook sender."""

import hashlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.services import api_key_create
from billing.tests.fake_stripe import FakeStripe, WebhookSender
from simulations import services as simulation_services
from simulations.models import Model

WEBHOOK_SECRET = "whsec_test_" + "5ecret" * 5


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


def client_for(user) -> APIClient:
    _key, plaintext = api_key_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.user = user  # type: ignore[attr-defined]  # for the tests' own use, not DRF's
    return client


def upload_model(owner, path: Path) -> Model:
    """Upload a test FMU as the API does: from a temporary copy, which storage may consume."""
    data = path.read_bytes()
    with tempfile.TemporaryDirectory() as directory:
        upload = Path(directory) / path.name
        upload.write_bytes(data)
        return simulation_services.model_upload(
            owner=owner,
            file_path=upload,
            file_name=path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )


@pytest.fixture
def bouncing_ball(user, fmu_paths) -> Model:
    return upload_model(user, fmu_paths["bouncing_ball"])
