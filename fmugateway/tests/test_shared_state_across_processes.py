"""The predecessor's fatal bug: keys made on one machine were unknown on another."""

import re

import pytest
import requests

pytestmark = pytest.mark.live

KEY_IN_PAGE = re.compile(r"fmu_[0-9a-f]{12}_[A-Za-z0-9_-]{32,}")
FORM_NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')
PASSWORD = "correct horse battery staple"


def portal_session(base_url: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base_url}/accounts/login/")  # sets the CSRF cookie
    return session


def post_form(session: requests.Session, url: str, data: dict) -> requests.Response:
    data = {**data, "csrfmiddlewaretoken": session.cookies["csrftoken"]}
    return session.post(url, data=data, headers={"Referer": url}, allow_redirects=False)


def test_a_key_made_on_one_process_works_on_another_and_revocation_is_immediate(shared_web):
    server_a, server_b = shared_web(2)

    on_a = portal_session(server_a.url)
    response = post_form(
        on_a,
        f"{server_a.url}/accounts/signup/",
        {"email": "grace@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302, response.text
    keys_url = f"{server_a.url}/accounts/keys/"
    nonce = FORM_NONCE.search(on_a.get(keys_url).text).group(1)
    page = post_form(on_a, keys_url, {"name": "made on A", "form_nonce": nonce})
    key = KEY_IN_PAGE.search(page.text).group(0)

    bearer = {"Authorization": f"Bearer {key}"}
    response = requests.get(f"{server_b.url}/api/v1/account", headers=bearer, timeout=5)
    assert response.status_code == 200
    assert response.json()["email"] == "grace@example.com"

    on_b = portal_session(server_b.url)
    response = post_form(
        on_b,
        f"{server_b.url}/accounts/login/",
        {"username": "grace@example.com", "password": PASSWORD},
    )
    assert response.status_code == 302
    keys_page = on_b.get(f"{server_b.url}/accounts/keys/").text
    key_id = re.search(r"/accounts/keys/(\d+)/revoke/", keys_page).group(1)
    response = post_form(on_b, f"{server_b.url}/accounts/keys/{key_id}/revoke/", {})
    assert response.status_code == 302

    response = requests.get(f"{server_a.url}/api/v1/account", headers=bearer, timeout=5)
    assert response.status_code == 401
    assert response.json()["detail"] == "This API key has been revoked."


def test_a_session_cookie_from_one_process_is_valid_on_another(shared_web):
    server_a, server_b = shared_web(2)
    session = portal_session(server_a.url)
    post_form(
        session,
        f"{server_a.url}/accounts/signup/",
        {"email": "linus@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    # Same cookies, other machine: still logged in (shared SECRET_KEY and session table).
    page = session.get(f"{server_b.url}/accounts/keys/", allow_redirects=False)
    assert page.status_code == 200
    assert "linus@example.com" in page.text
