"""The client's tests run it against live servers: gunicorn, a Celery worker on Redis,
PostgreSQL and (for payments) the billing tests' fake Stripe.

The package is imported from client/src, so the suite needs no install of it
(test_install.py shows that `pip install ./client` works on its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[1]
CLIENT_SOURCE = CLIENT_DIR / "src"
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))

from fmugateway_client import Client  # noqa: E402

from accounts.services import api_key_create  # noqa: E402
from accounts.tests.factories import UserFactory  # noqa: E402
from billing.tests.conftest import (  # noqa: E402, F401  (fixtures shared with billing's tests)
    billing_environment,
    billing_on,
    fake_stripe,
    fake_stripe_server,
    webhook,
)


@dataclass
class Gateway:
    """A running gateway and an account on it: its user, plaintext key and a Client."""

    url: str
    user: object
    api_key: str
    client: Client

    def cli(
        self,
        *arguments: str,
        env: dict[str, str] | None = None,
        login_from_env: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run `fmugw` (as `python -m fmugateway_client`) against this gateway.

        With login_from_env=False it gets no FMUGW_* variables: only a saved login.
        """
        url, api_key = (self.url, self.api_key) if login_from_env else (None, None)
        return subprocess.run(
            [sys.executable, "-m", "fmugateway_client", *arguments],
            env=cli_environment(url, api_key, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_cli(self, *arguments: str) -> subprocess.Popen[str]:
        """Start `fmugw` without waiting for it; its stdout and stderr are pipes."""
        return subprocess.Popen(
            [sys.executable, "-m", "fmugateway_client", *arguments],
            env=cli_environment(self.url, self.api_key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def cli_environment(url: str | None, api_key: str | None, **extra: str) -> dict[str, str]:
    """A clean environment for a CLI process: its config dir is the caller's to choose."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(CLIENT_SOURCE),
        "XDG_CONFIG_HOME": extra.pop("XDG_CONFIG_HOME", "/nonexistent-fmugw-config"),
    }
    if url:
        environment["FMUGW_URL"] = url
    if api_key:
        environment["FMUGW_API_KEY"] = api_key
    environment.update(extra)
    return environment


def new_account(url: str) -> Gateway:
    user = UserFactory()
    # factory_boy's UserFactory() makes a User; mypy takes it for a UserFactory.
    _key, plaintext = api_key_create(user=user)  # type: ignore[arg-type]
    return Gateway(url=url, user=user, api_key=plaintext, client=Client(url, plaintext))


@pytest.fixture
def web_only(live_servers) -> Gateway:
    """A live web process without a worker: enough for everything but finishing runs."""
    (server,) = live_servers(1)
    return new_account(server.url)


@pytest.fixture
def gateway(live_servers, live_workers, redis_broker_url) -> Gateway:
    """Web + a Celery worker on Redis; runs are free (billing off)."""
    (server,) = live_servers(1, CELERY_BROKER_URL=redis_broker_url)
    live_workers(concurrency=2, CELERY_BROKER_URL=redis_broker_url)
    return new_account(server.url)


@pytest.fixture
def paid_web_only(live_servers, billing_environment, webhook) -> Gateway:  # noqa: F811
    """A web process with billing on against the fake Stripe, no worker; no credit."""
    (server,) = live_servers(1, **billing_environment)
    return new_account(server.url)


@pytest.fixture
def paid_gateway(
    live_servers,
    live_workers,
    redis_broker_url,
    billing_environment,  # noqa: F811
    webhook,  # noqa: F811
) -> Gateway:
    """Web + worker with billing on against the fake Stripe; the account has no credit."""
    (server,) = live_servers(1, CELERY_BROKER_URL=redis_broker_url, **billing_environment)
    live_workers(concurrency=1, CELERY_BROKER_URL=redis_broker_url, **billing_environment)
    return new_account(server.url)
