import hashlib
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import hashers
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ACCOUNT_URL = "/api/v1/account"


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def assert_problem(response, status: int, detail_contains: str = "") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert detail_contains.lower() in body["detail"].lower()
    return body


def test_a_valid_key_authenticates_as_its_owner(user, api_key_for):
    _api_key, plaintext = api_key_for(user)
    response = client_with(f"Bearer {plaintext}").get(ACCOUNT_URL)
    assert response.status_code == 200
    assert response.json() == {
        "email": user.email,
        "balance_cents": 0,
        "balance": "$0.00",
        "credit_balance": 0,
        "price": {"amount": "1.00", "currency": "usd"},
        "study_case_price": {"amount": "0.02", "currency": "usd"},
        "billing_mode": "off",
    }


def test_the_key_has_the_documented_shape(user, api_key_for):
    api_key, plaintext = api_key_for(user)
    scheme, prefix, secret = plaintext.split("_", 2)
    assert scheme == "fmu"
    assert prefix == api_key.prefix
    assert len(secret) >= 40


def test_no_header_is_a_401_problem_with_a_bearer_challenge(db):
    response = client_with(None).get(ACCOUNT_URL)
    assert_problem(response, 401, "credentials")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer fmu_000000000000_" + "x" * 43,
        "Bearer not-a-key",
        "Token fmu_000000000000_" + "x" * 43,
        "Bearer ",
    ],
)
def test_unknown_or_malformed_keys_are_401(db, authorization):
    assert_problem(client_with(authorization).get(ACCOUNT_URL), 401)


def test_a_wrong_secret_for_a_real_prefix_is_401(user, api_key_for):
    _api_key, plaintext = api_key_for(user)
    tampered = plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb")
    assert_problem(client_with(f"Bearer {tampered}").get(ACCOUNT_URL), 401, "invalid")


def test_a_revoked_key_is_401_at_once(user, api_key_for):
    api_key, plaintext = api_key_for(user)
    client = client_with(f"Bearer {plaintext}")
    assert client.get(ACCOUNT_URL).status_code == 200
    api_key_revoke(api_key=api_key)
    assert_problem(client.get(ACCOUNT_URL), 401, "revoked")


def test_an_expired_key_is_401(user, api_key_for):
    _api_key, plaintext = api_key_for(user, expires_at=timezone.now() + timedelta(minutes=5))
    client = client_with(f"Bearer {plaintext}")
    assert client.get(ACCOUNT_URL).status_code == 200
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_problem(client.get(ACCOUNT_URL), 401, "expired")


def test_a_disabled_account_is_401(user, api_key_for):
    _api_key, plaintext = api_key_for(user)
    user.is_active = False
    user.save()
    assert_problem(client_with(f"Bearer {plaintext}").get(ACCOUNT_URL), 401, "disabled")


def test_last_used_at_is_recorded(user, api_key_for):
    api_key, plaintext = api_key_for(user)
    assert api_key.last_used_at is None
    client_with(f"Bearer {plaintext}").get(ACCOUNT_URL)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_requests_within_a_minute_do_not_write_the_key_again(user, api_key_for):
    api_key, plaintext = api_key_for(user)
    client = client_with(f"Bearer {plaintext}")
    client.get(ACCOUNT_URL)

    with CaptureQueriesContext(connection) as queries:
        client.get(ACCOUNT_URL)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.get(ACCOUNT_URL)

    writes = [query["sql"] for query in queries if query["sql"].startswith("UPDATE")]
    assert not [sql for sql in writes if "accounts_apikey" in sql]
    api_key.refresh_from_db()
    assert api_key.last_used_at > timezone.now() - timedelta(seconds=30)


def test_the_database_holds_no_plaintext_key(user, api_key_for):
    api_key, plaintext = api_key_for(user, name="ci")
    _scheme, _prefix, secret = plaintext.split("_", 2)
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    for value in stored.values():
        assert secret not in str(value)
        assert plaintext not in str(value)


def test_a_thousand_requests_use_no_password_hashing(user, api_key_for):
    """Key checks are one HMAC, never PBKDF2/bcrypt/argon2 per request."""
    _api_key, plaintext = api_key_for(user)
    client = client_with(f"Bearer {plaintext}")
    with (
        mock.patch.object(hashlib, "pbkdf2_hmac", wraps=hashlib.pbkdf2_hmac) as pbkdf2,
        mock.patch.object(hashers, "check_password", wraps=hashers.check_password) as check,
        mock.patch.object(hashers, "make_password", wraps=hashers.make_password) as make,
        mock.patch.object(UserRateThrottle, "THROTTLE_RATES", {"user": "5000/min"}),
    ):
        for _ in range(1000):
            assert client.get(ACCOUNT_URL).status_code == 200
    assert pbkdf2.call_count == 0
    assert check.call_count == 0
    assert make.call_count == 0


def test_someone_elses_key_reads_their_own_account(api_key_for):
    alice, bob = UserFactory(), UserFactory()
    _key, bob_plaintext = api_key_for(bob)
    response = client_with(f"Bearer {bob_plaintext}").get(ACCOUNT_URL)
    assert response.json()["email"] == bob.email != alice.email
