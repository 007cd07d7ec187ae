import pytest

from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_operators_find_a_customer_by_the_prefix_of_a_key(operator_client, api_key_for):
    customer, other = UserFactory(), UserFactory()
    api_key, _plaintext = api_key_for(customer)
    api_key_for(other)
    page = operator_client.get("/admin/accounts/user/", {"q": api_key.prefix}).content.decode()
    assert customer.email in page
    assert other.email not in page


def test_operators_revoke_keys_from_the_admin(operator_client, api_key_for):
    api_key, _plaintext = api_key_for(UserFactory())
    response = operator_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "_selected_action": [api_key.pk]},
    )
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
