"""API clients for tests, authenticated the way callers are: with a fresh API key."""

from rest_framework.test import APIClient

from accounts.services import api_key_create


def client_for(user) -> APIClient:
    _key, plaintext = api_key_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client
