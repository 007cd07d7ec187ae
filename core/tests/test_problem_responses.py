from unittest import mock

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

pytestmark = pytest.mark.django_db


def test_an_unknown_api_path_is_a_404_problem(api_client):
    response = api_client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_a_wrong_method_is_a_405_problem(api_client):
    response = api_client.delete("/api/v1/account")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Method not allowed"


def test_throttling_is_a_429_problem_with_retry_after(api_client, settings):
    cache.clear()
    with mock.patch.object(UserRateThrottle, "THROTTLE_RATES", {"user": "3/min"}):
        statuses = [api_client.get("/api/v1/account").status_code for _ in range(4)]
        response = api_client.get("/api/v1/account")
    assert statuses == [200, 200, 200, 429]
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0


def test_an_unexpected_error_is_a_500_problem_without_a_traceback(api_client):
    with mock.patch("billing.api.credit_balance", side_effect=RuntimeError("secret internals")):
        response = api_client.get("/api/v1/account")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in response.content.decode()


def test_unauthenticated_access_is_401_not_403(db):
    response = APIClient().get("/api/v1/account")
    assert response.status_code == 401
