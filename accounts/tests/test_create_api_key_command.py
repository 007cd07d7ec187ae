import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_prints_a_working_key_on_its_last_line_and_creates_the_user():
    key = run_command("--email", "ops@example.com", "--create-user", "--name", "script")
    assert User.objects.filter(email="ops@example.com").exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/account").json()["email"] == "ops@example.com"


def test_uses_an_existing_account():
    user = UserFactory()
    run_command("--email", user.email.upper())
    assert user.api_keys.count() == 1


def test_refuses_an_unknown_account_without_create_user():
    with pytest.raises(CommandError, match="--create-user"):
        run_command("--email", "nobody@example.com")
