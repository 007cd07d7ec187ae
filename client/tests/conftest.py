"""The client's tests run it against live servers (the shared ones, see conftest.py at the
root): gunicorn, a Celery worker on Redis, PostgreSQL and (for payments) the fake Stripe.

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
import requests

CLIENT_DIR = Path(__file__).resolve().parents[1]
CLIENT_SOURCE = CLIENT_DIR / "src"
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))

from fmugateway_client import Client  # noqa: E402

from accounts.tests.factories import UserFactory  # noqa: E402
from testing.api import new_api_key  # noqa: E402


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

    def server_csv(self, run_id: str, **params: str) -> str:
        """A run's result CSV exactly as the server sends it, fetched without the client."""
        response = requests.get(
            f"{self.url}/api/v1/simulations/{run_id}/result",
            params={"format": "csv", **params},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.text

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
    plaintext = new_api_key(user)
    return Gateway(url=url, user=user, api_key=plaintext, client=Client(url, plaintext))


@pytest.fixture
def web_only(shared_web) -> Gateway:
    """A live web process without a worker: enough for everything but finishing runs."""
    (server,) = shared_web(1)
    return new_account(server.url)


@pytest.fixture
def gateway(shared_gateway) -> Gateway:
    """Web + a Celery worker on Redis; runs are free (billing off)."""
    return new_account(shared_gateway.url)


@pytest.fixture
def paid_web_only(shared_billing_web, webhook) -> Gateway:
    """A web process with billing on against the fake Stripe, no worker; no credit."""
    (server,) = shared_billing_web(1)
    return new_account(server.url)


@pytest.fixture
def paid_gateway(shared_billing_gateway, webhook) -> Gateway:
    """Web + worker with billing on against the fake Stripe; the account has no credit."""
    return new_account(shared_billing_gateway.url)
