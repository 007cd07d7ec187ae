"""Calling the API as its callers do, with a fresh API key: in this process (DRF's test
client, no server) or over HTTP to a live server (requests)."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from rest_framework.test import APIClient

MODELS_URL = "/api/v1/models"
SIMULATIONS_URL = "/api/v1/simulations"


def new_api_key(user) -> str:
    """A new key for `user` (made by the service, accounts/tests/factories.py); its plaintext."""
    from accounts.tests.factories import ApiKeyFactory

    api_key = ApiKeyFactory(user=user)
    return api_key.plaintext  # type: ignore[attr-defined]  # set by the factory, not a field


def bearer_headers(user) -> dict[str, str]:
    """The Authorization header of a new key for `user`."""
    return {"Authorization": f"Bearer {new_api_key(user)}"}


# --- in this process ------------------------------------------------------------------------------


def api_client_for(user) -> APIClient:
    """DRF's test client authenticated with a new key for `user` (also as `.user`)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {new_api_key(user)}")
    client.user = user  # type: ignore[attr-defined]  # for the tests' own use, not DRF's
    return client


def upload_fmu(client: APIClient, path: Path):
    """POST an FMU file to /api/v1/models; the response, whatever it is."""
    with Path(path).open("rb") as handle:
        return client.post(MODELS_URL, {"file": handle}, format="multipart")


def uploaded_model_id(client: APIClient, path: Path) -> str:
    """Upload an FMU through the API; its model id (the upload must succeed)."""
    response = upload_fmu(client, path)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def run_request(model, **fields) -> dict:
    """A short run's request body: one second, ten output points, plus `fields`."""
    return {"model": str(model.pk), "stop_time": 1.0, "output_interval": 0.1, **fields}


def start_run(client: APIClient, body: dict, **headers):
    """POST a run request; the response, whatever it is."""
    return client.post(SIMULATIONS_URL, body, format="json", **headers)


# --- over HTTP, to a live server ------------------------------------------------------------------


def http_session(user) -> requests.Session:
    """A requests session authenticated with a new key for `user`."""
    session = requests.Session()
    session.headers.update(bearer_headers(user))
    return session


def upload_over_http(
    base_url: str, path: Path, *, session: requests.Session | None = None, headers=None
) -> requests.Response:
    """POST an FMU file to a live server's /api/v1/models; the response."""
    with Path(path).open("rb") as handle:
        return (session or requests).post(
            f"{base_url}{MODELS_URL}", files={"file": handle}, headers=headers, timeout=120
        )


def wait_for_run(
    base_url: str,
    run_id: str,
    *,
    session: requests.Session | None = None,
    headers=None,
    timeout: float = 120,
) -> dict:
    """The run's JSON once it is no longer queued or running (long-polling ?wait=10)."""
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        run = (
            (session or requests)
            .get(f"{base_url}{SIMULATIONS_URL}/{run_id}?wait=10", headers=headers, timeout=30)
            .json()
        )
        if run["status"] not in ("queued", "running"):
            return run
    raise AssertionError(f"run {run_id} did not finish within {timeout} s: {run}")
