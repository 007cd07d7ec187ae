import re

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, User
from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

KEY_IN_PAGE = re.compile(r"fmu_[0-9a-f]{12}_[A-Za-z0-9_-]{32,}")


FORM_NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')


def post_key_form(client: Client, data: dict):
    """GET the keys page (for its one-time form nonce), then POST the form."""
    nonce = FORM_NONCE.search(client.get(reverse("accounts:keys")).content.decode())
    assert nonce, "the keys page carries its form's nonce"
    return client.post(reverse("accounts:keys"), {**data, "form_nonce": nonce.group(1)})


def create_key_through_portal(client: Client, name: str = "laptop") -> tuple[str, str]:
    """POST the key form; returns (the new plaintext key, the page HTML)."""
    response = post_key_form(client, {"name": name})
    assert response.status_code == 200
    html = response.content.decode()
    match = KEY_IN_PAGE.search(html)
    assert match, "the new key is shown on the page that created it"
    return match.group(0), html


def test_signup_login_create_key_and_call_the_api():
    client = Client()
    response = client.post(
        reverse("accounts:signup"),
        {"email": "Ada@Example.com", "password1": DEFAULT_PASSWORD, "password2": DEFAULT_PASSWORD},
    )
    assert response.status_code == 302
    assert User.objects.filter(email="ada@example.com").exists()

    client.post(reverse("logout"))
    response = client.post(
        reverse("login"), {"username": "ada@example.com", "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 302, response.content

    key, _html = create_key_through_portal(client)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = api.get("/api/v1/account")
    assert response.status_code == 200
    assert response.json()["email"] == "ada@example.com"


def test_the_key_is_shown_only_in_the_response_that_created_it():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    key, created_page = create_key_through_portal(client, name="ci")
    assert "shown only this once" in created_page

    listing = client.get(reverse("accounts:keys")).content.decode()
    secret = key.split("_", 2)[2]
    assert secret not in listing
    assert key.split("_", 2)[1] in listing  # the prefix identifies it
    assert "ci" in listing


def test_keys_can_be_named_given_an_expiry_and_revoked():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    response = post_key_form(client, {"name": "nightly", "expires_at": "2099-01-01T10:00"})
    assert response.status_code == 200
    api_key = ApiKey.objects.get(user=user)
    assert api_key.name == "nightly"
    assert api_key.expires_at.year == 2099

    response = client.post(reverse("accounts:key-revoke", args=[api_key.id]))
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_an_expiry_in_the_past_is_refused():
    client = Client()
    client.force_login(UserFactory())
    response = post_key_form(client, {"name": "old", "expires_at": "2001-01-01T10:00"})
    assert "must be in the future" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_nobody_can_revoke_another_accounts_key(api_key_for):
    owner, intruder = UserFactory(), UserFactory()
    api_key, _plaintext = api_key_for(owner)
    client = Client()
    client.force_login(intruder)
    response = client.post(reverse("accounts:key-revoke", args=[api_key.id]))
    assert response.status_code == 404
    api_key.refresh_from_db()
    assert api_key.revoked_at is None


def test_ten_wrong_passwords_lock_further_attempts():
    user = UserFactory()
    client = Client()
    for _ in range(10):
        response = client.post(reverse("login"), {"username": user.email, "password": "wrong"})
    # Now even the right password is refused for a while.
    response = client.post(reverse("login"), {"username": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_nine_wrong_passwords_do_not_lock_the_account():
    user = UserFactory()
    client = Client()
    for _ in range(9):
        client.post(reverse("login"), {"username": user.email, "password": "wrong"})
    response = client.post(reverse("login"), {"username": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302


def test_password_reset_sends_a_working_link(mailoutbox):
    user = UserFactory()
    client = Client()
    client.post(reverse("accounts:password_reset"), {"email": user.email})
    assert len(mailoutbox) == 1
    link = re.search(r"http://\S+", mailoutbox[0].body).group(0)
    path = link.split("testserver", 1)[1]
    response = client.get(path, follow=True)
    assert response.status_code == 200
    new_password = "a brand new passphrase 42"
    response = client.post(
        response.redirect_chain[-1][0],
        {"new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new_password)


def test_sending_the_same_key_form_twice_makes_one_key():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    nonce = FORM_NONCE.search(client.get(reverse("accounts:keys")).content.decode()).group(1)
    first = client.post(reverse("accounts:keys"), {"name": "ci", "form_nonce": nonce})
    again = client.post(reverse("accounts:keys"), {"name": "ci", "form_nonce": nonce})
    assert KEY_IN_PAGE.search(first.content.decode())
    assert not KEY_IN_PAGE.search(again.content.decode())
    assert "already sent" in again.content.decode()
    assert ApiKey.objects.filter(user=user).count() == 1
