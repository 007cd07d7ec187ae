"""Writes for accounts and API keys."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.keys import format_key, generate_key_parts, hash_secret
from accounts.models import ApiKey, User

LAST_USED_RESOLUTION = timedelta(minutes=1)


def user_create(*, email: str, password: str | None) -> User:
    """A new account; the password is checked against the validators when given."""
    if password is not None:
        validate_password(password, user=User(email=email))
    return User.objects.create_user(email=email, password=password)


def api_key_create(
    *, user: User, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which exists only in this return value."""
    for _attempt in range(5):
        prefix, secret = generate_key_parts()
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    user=user,
                    name=name.strip(),
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    expires_at=expires_at,
                )
        except IntegrityError:  # prefix collision: astronomically rare, retry
            continue
        return api_key, format_key(prefix, secret)
    raise RuntimeError("Could not allocate a unique API key prefix.")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoked at once for every process: the row is the only truth, nothing is cached."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Keep last_used_at to the minute without a write on every request."""
    now = timezone.now()
    if api_key.last_used_at is not None and api_key.last_used_at >= now - LAST_USED_RESOLUTION:
        return  # the row just read is recent enough: no query at all
    updated = (
        ApiKey.objects.filter(pk=api_key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION))
        .update(last_used_at=now)
    )
    if updated:
        api_key.last_used_at = now
