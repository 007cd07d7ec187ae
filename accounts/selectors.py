"""Reads of accounts and API keys, always scoped to their owner."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.keys import parse_key, secret_matches
from accounts.models import ApiKey, User


def api_keys_for_user(*, user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created_at")


def api_key_for_user(*, user: User, key_id: int) -> ApiKey:
    return api_keys_for_user(user=user).get(pk=key_id)


def api_key_from_raw(raw_key: str) -> ApiKey | None:
    """The key a bearer token names, if its secret matches; usability is checked by the caller."""
    parts = parse_key(raw_key)
    if parts is None:
        return None
    prefix, secret = parts
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if api_key is None or not secret_matches(secret, api_key.secret_hash):
        return None
    return api_key
